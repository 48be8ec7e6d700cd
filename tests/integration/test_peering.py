"""HA: two operator processes with kopf peering never rotate a key twice for one trigger."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.process import OperatorProcess
from tests.integration.helpers import apikey

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def api_only() -> Iterator[LocalCluster]:
    with LocalCluster(start_operator=False) as local:
        local.api.create_object({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering",
                                 "metadata": {"name": "apikey-operator"}})
        yield local


def test_two_replicas_rotate_once_per_trigger(api_only: LocalCluster) -> None:
    cluster = api_only
    replicas = [OperatorProcess(cluster.kubeconfig, cluster.workdir, standalone=False,
                                name=f"replica-{i}") for i in range(2)]
    for replica in replicas:
        replica.start()
    try:
        names = [f"key-{i}" for i in range(5)]
        for name in names:
            cluster.apply(apikey(name))
        for name in names:
            cluster.wait_ready("payments", name, timeout=60)
        for name in names:
            cluster.annotate("payments", name, {"apikeys.dev/rotate": "once"})
        for name in names:
            cluster.wait_for(lambda n=name: (cluster.apikey("payments", n) or {})  # type: ignore[misc]
                             .get("status", {}).get("lastHandledRotate") == "once",
                             timeout=60, what=f"{name} rotated")
        time.sleep(3)  # time for a second replica to (wrongly) act as well
        for name in names:
            body = cluster.apikey("payments", name)
            assert body is not None
            assert body["status"]["currentKey"]["version"] == 2, name
            reasons = cluster.event_reasons("payments", name)
            assert reasons.count("Rotated") == 1, (name, reasons)
            assert reasons.count("Provisioned") == 1, (name, reasons)
        assert all(r.alive for r in replicas), "a replica died"
    finally:
        for replica in replicas:
            replica.stop()
    logs = "\n".join(r.logs() for r in replicas)
    # Our code and our handlers must log no errors. (kopf 1.45 itself logs an asyncio error
    # from a watch-stream cancel callback when peering pauses a replica: not ours.)
    errors = [line for line in logs.splitlines() if '"level": "ERROR"' in line
              and ('"logger": "apikey_operator' in line or '"logger": "kopf.objects"' in line)]
    assert errors == [], errors[:3]
