"""An early end is crash-safe: SIGKILL right after its first half (the Secret lost the
previous key) and a restarted operator finishes the revoke, even with no usage data at all,
instead of putting the key back; the early end is announced once.

Real processes, the configuration file's own limits (one query a minute, a 1m window), a
real Prometheus scraping two example services, a driver that moves to the new key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from apikey_operator.rotation import GRACE_ENDED_EARLY_ANNOTATION
from apikey_operator.testing.process import OperatorProcess
from apikey_operator.testing.servers import free_port
from tests.integration.helpers import apikey, policy, store_valid_keys
from tests.integration.test_usage_grace import NAME, NS, Driver, Usage, usage_world

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Usage]:
    yield from usage_world(tmp_path, operator_thread=False)


def test_a_kill_between_the_halves_of_an_early_end_finishes_the_revoke(world: Usage) -> None:
    cluster = world.cluster
    usage = {"prometheus": {"url": world.prometheus.url, "interval": "1m", "window": "1m",
                            "timeout": "2s"}}
    armed = OperatorProcess(cluster.kubeconfig, cluster.workdir, name="armed", usage=usage,
                            env={"APIKEY_OPERATOR_CRASH_AT": "after-expire-secret"})
    armed.start()
    healthy = OperatorProcess(cluster.kubeconfig, cluster.workdir, name="healthy",
                              usage={"prometheus": {"url": f"http://127.0.0.1:{free_port()}"}})
    driver = None
    try:
        cluster.apply(policy("usage", rotateEvery="1h", gracePeriod="20m",
                             earlyExpiry={"unusedFor": "1m", "minimumGrace": "1s"}))
        cluster.apply(apikey(NAME, rotationPolicyRef={"name": "usage"}))
        cluster.wait_ready(NS, NAME, timeout=60)
        world.start_consumers(world.ports)  # type: ignore[attr-defined]
        driver = Driver(world.bases, lambda: world.secret_keys().get("api-key")).start()
        cluster.wait_for(lambda: driver.sent > 20, what="traffic with the first key")
        old = world.secret_keys()["api-key"]
        promised = world.rotate()
        # The early end's first half, then the kill (one query a minute: a few minutes at most).
        assert armed.wait_exit(300) is not None, "the armed operator never reached the point"
        secret = cluster.secret(NS, NAME) or {}
        assert "api-key-previous" not in (secret.get("data") or {})
        previous_version = world.status()["previousKey"]["version"]
        assert secret["metadata"]["annotations"][GRACE_ENDED_EARLY_ANNOTATION] == str(
            previous_version)
        assert old in store_valid_keys(cluster, NS, NAME).values()  # not revoked yet

        # The healthy operator's usage source does not answer: the Secret alone says the
        # early end had begun.
        healthy.start()
        cluster.wait_for(lambda: old not in store_valid_keys(cluster, NS, NAME).values(),
                         timeout=60, what="the revoke finished")
        ended = cluster.wait_for(
            lambda: [e for e in cluster.events(NS, NAME) if e["reason"] == "GraceEndedEarly"],
            timeout=30, what="GraceEndedEarly")
        ended_by = datetime.now(UTC)
    finally:
        if driver is not None:
            driver.stop()
        armed.kill()
        healthy.kill()
    assert len(ended) == 1
    assert "GraceExpired" not in world.reasons()
    assert "api-key-previous" not in world.secret_keys()
    assert old not in world.secret_keys().values()  # never put back
    assert world.status().get("previousKey") is None
    assert ended_by < promised  # the grace did end early, not by its timer
