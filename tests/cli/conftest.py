"""Fixtures for the command line driven against the real control plane and operator."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest

from apikey_operator import metrics
from apikey_operator.testing.harness import LocalCluster


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """The control plane with the operator running; fails the test if any key leaked."""
    with LocalCluster() as local:
        yield local
        local.stop_operator_thread()
        seen = local.visible_text() + generate_latest(metrics.REGISTRY).decode()
        leaks = local.recorder.leaks_in(seen)
        assert not leaks, f"keys leaked into logs, events, status or metadata: {leaks}"
