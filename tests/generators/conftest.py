"""Fixtures for the webhook generator: the fake vendor, its token, the operator using it."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from apikey_operator import keys, metrics
from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.vendor import DEFAULT_TOKEN, FakeVendor


@pytest.fixture
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture
def token_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "vendor-token"
    path.write_text(DEFAULT_TOKEN + "\n", encoding="utf-8")
    return path


@pytest.fixture
def generator_config(vendor: FakeVendor, token_file: pathlib.Path) -> dict[str, Any]:
    """The operator's `generators.vendor` block; modules override it (tokenSecret, ...)."""
    return {"type": "webhook", "url": vendor.url, "allowInsecureHttp": True,
            "tokenFile": str(token_file), "timeoutSeconds": 5, "maxRetries": 2}


@pytest.fixture
def cluster(vendor: FakeVendor, generator_config: dict[str, Any]) -> Iterator[LocalCluster]:
    """The emulated API with the operator using the fake vendor; fails the test if any key
    (minted by the vendor or seen by the operator) leaked into logs, events or status."""
    with LocalCluster(generators={"vendor": generator_config}) as local:
        yield local
        local.stop_operator_thread()
        seen = local.visible_text() + generate_latest(metrics.REGISTRY).decode()
        leaks = local.recorder.leaks_in(seen)
        leaks += sorted(keys.fingerprint(k) for k in vendor.all_keys() if k in seen)
        assert not leaks, f"keys leaked into logs, events, status or metadata: {leaks}"
        for token in {DEFAULT_TOKEN, vendor.token}:
            assert token not in seen, "the vendor token leaked into logs or events"
