"""Builders and reads shared by the webhook generator's operator tests."""

from __future__ import annotations

from typing import Any

from apikey_operator.testing.harness import LocalCluster
from tests.integration.helpers import apikey

SCOPES = ["invoices:read", "invoices:write"]


def vendor_apikey(name: str, **spec: Any) -> dict[str, Any]:
    """An ApiKey whose keys the `vendor` generator mints."""
    spec.setdefault("key", {"prefix": "bill_"})
    spec.setdefault("scopes", SCOPES)
    return apikey(name, generator={"webhook": {"name": "vendor"}}, **spec)


def current(cluster: LocalCluster, name: str = "billing") -> str:
    return cluster.secret_data("payments", name)["api-key"]


def version(cluster: LocalCluster, name: str = "billing") -> int:
    body = cluster.apikey("payments", name) or {}
    return int(((body.get("status") or {}).get("currentKey") or {}).get("version") or 0)


def uid(cluster: LocalCluster, name: str = "billing") -> str:
    return str((cluster.apikey("payments", name) or {})["metadata"]["uid"])
