"""End to end: the real operator rotates a key on the emulated API while the example
client keeps calling the example service, each reading its own projected volume.

The test plays two kubelets (one per pod, syncing at different rates), so the two
pods see every change of the Secret at different moments, as on a real cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apikey_operator.keys import fingerprint
from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.kubelet import SecretData, SecretVolume, SecretVolumeSync

from .helpers import example_service, load_example, status_with

pytestmark = pytest.mark.integration

NAMESPACE, NAME, SECRET = "payments", "billing-client", "billing-client-key"
GRACE = "4s"
WAIT = 30.0


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local
        local.stop_operator_thread()
        assert local.leaks() == [], "a key leaked into logs, events, status or metadata"


def secret_data(cluster: LocalCluster) -> SecretData:
    secret = cluster.secret(NAMESPACE, SECRET)
    return None if secret is None else dict(secret.get("data") or {})


def previous_in(volume: SecretVolume) -> bool:
    return "api-key-previous" in volume.read()


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate` without blocking the loop (the client runs on it meanwhile)."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {WAIT}s waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_rotation_by_the_operator_fails_no_request(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster.apply(
        {
            "apiVersion": "apikeys.dev/v1alpha1",
            "kind": "RotationPolicy",
            "metadata": {"name": "short-grace"},
            "spec": {"rotateEvery": "1h", "gracePeriod": GRACE},
        }
    )
    cluster.apply(
        {
            "apiVersion": "apikeys.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "rotationPolicyRef": {"name": "short-grace"},
                "key": {"prefix": "bill_"},
                "secret": {"name": SECRET},
            },
        }
    )
    cluster.wait_ready(NAMESPACE, NAME)
    service_pod = SecretVolume(tmp_path / "service-pod")
    client_pod = SecretVolume(tmp_path / "client-pod")
    # The service's kubelet is the slower one, so the client sees the new key first.
    service_sync = SecretVolumeSync(service_pod, lambda: secret_data(cluster), period=0.7)
    client_sync = SecretVolumeSync(client_pod, lambda: secret_data(cluster), period=0.05)
    client_module = load_example("client")
    log = tmp_path / "service.log"
    with service_sync, client_sync, example_service(service_pod.directory, log) as base:
        old = service_pod.read()["api-key"].decode()
        stop = asyncio.Event()
        run = asyncio.create_task(
            client_module.run(
                f"{base}/invoices", client_pod.directory, ttl=0.5, interval=0.02, count=0, stop=stop
            )
        )
        await asyncio.sleep(0.5)
        cluster.annotate(NAMESPACE, NAME, {"apikeys.dev/rotate": "e2e"})
        await wait_until(lambda: previous_in(client_pod), "the rotation to reach the client")
        new = client_pod.read()["api-key"].decode()
        await wait_until(lambda: previous_in(service_pod), "the rotation to reach the service")
        await wait_until(
            lambda: not previous_in(client_pod) and not previous_in(service_pod),
            "the grace period to end in both pods",
        )
        # KeyRing notices a removed previous key within its 1 s check interval.
        await asyncio.sleep(1.5)
        stop.set()
        stats = await asyncio.wait_for(run, timeout=30)

        assert new != old
        assert stats.failed == 0
        assert stats.keys_used[fingerprint(old)] > 0
        assert stats.keys_used[fingerprint(new)] > 0
        assert status_with(f"{base}/invoices", old) == 401
        assert status_with(f"{base}/invoices", new) == 200
    assert service_sync.errors == [] and client_sync.errors == []
    assert old not in log.read_text() and new not in log.read_text()
