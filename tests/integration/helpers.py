"""Shared builders and checks for the operator's integration tests."""

from __future__ import annotations

import json
from typing import Any

from apikey_operator.testing.harness import LocalCluster


def apikey(name: str, namespace: str = "payments", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def policy(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apikeys.dev/v1alpha1", "kind": "RotationPolicy",
            "metadata": {"name": name}, "spec": spec}


def store_valid_keys(cluster: LocalCluster, namespace: str, name: str) -> dict[int, str]:
    """Version -> key of every version the built-in store holds as valid."""
    data = cluster.secret_data("apikey-operator", f"ak.{namespace}.{name}")
    secret = cluster.secret("apikey-operator", f"ak.{namespace}.{name}") or {}
    book = json.loads(secret["metadata"]["annotations"]["apikeys.dev/store-state"])
    valid = {}
    for pointer in ("current", "previous", "pending"):
        version = book.get(pointer)
        if version is not None:
            valid[version] = json.loads(data[f"v{version}"])["key"]
    return valid
