"""Issue 16's own case, at its own scale: a policy with a 1h grace and
`earlyExpiry: {unusedFor: 1m, minimumGrace: 30s}`, the operator with the configuration
file's limits (one query a minute over a 1m window), a real Prometheus scraping two example
services, and consumers that move to the new key. The previous key is revoked in the store
within about two minutes, with GraceEndedEarly; with Prometheus stopped, the next rotation
keeps its whole hour.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from apikey_operator.stores.base import parse_time
from apikey_operator.testing.process import OperatorProcess
from tests.integration.helpers import apikey, policy, store_valid_keys
from tests.integration.test_usage_grace import NAME, NS, Driver, Usage, usage_world

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

GRACE = timedelta(hours=1)
# "About two minutes": the minute without use, then the next minute's query.
EARLY_END_WITHIN = 180.0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Usage]:
    yield from usage_world(tmp_path, operator_thread=False)


def _early_ends(world: Usage) -> int:
    return world.reasons().count("GraceEndedEarly")


def test_an_unused_previous_key_goes_in_minutes_and_without_prometheus_keeps_its_hour(
    world: Usage,
) -> None:
    cluster = world.cluster
    usage = {"prometheus": {"url": world.prometheus.url, "interval": "1m", "window": "1m",
                            "timeout": "2s"}}
    operator = OperatorProcess(cluster.kubeconfig, cluster.workdir, name="usage", usage=usage)
    operator.start()
    driver = None
    try:
        cluster.apply(policy("usage", rotateEvery="24h", gracePeriod="1h",
                             earlyExpiry={"unusedFor": "1m", "minimumGrace": "30s"}))
        cluster.apply(apikey(NAME, rotationPolicyRef={"name": "usage"}))
        cluster.wait_ready(NS, NAME, timeout=60)
        world.start_consumers(world.ports)  # type: ignore[attr-defined]
        driver = Driver(world.bases, lambda: world.secret_keys().get("api-key")).start()
        cluster.wait_for(lambda: driver.sent > 20, what="traffic with the first key")

        first = world.secret_keys()["api-key"]
        rotated_at = time.monotonic()
        promised = world.rotate()
        cluster.wait_for(lambda: first not in store_valid_keys(cluster, NS, NAME).values(),
                         timeout=EARLY_END_WITHIN, what="the unused previous key revoked")
        took = time.monotonic() - rotated_at
        # Announced once the status records it, which comes after the store's revoke.
        cluster.wait_for(lambda: _early_ends(world) == 1, timeout=30, what="GraceEndedEarly")
        assert "GraceExpired" not in world.reasons()
        assert first not in world.secret_keys().values()
        assert datetime.now(UTC) < promised - timedelta(minutes=55)
        print(f"previous key revoked {took:.0f} s after the rotation")

        # Prometheus stops: the same rotation keeps its whole grace.
        world.prometheus.stop()
        second = world.secret_keys()["api-key"]
        cluster.annotate(NS, NAME, {"apikeys.dev/rotate": "without-prometheus"})
        previous = cluster.wait_for(
            lambda: (world.status().get("previousKey") or {}).get("validUntil"),
            what="the second rotation")
        asked = datetime.now(UTC)
        until = parse_time(previous)
        assert abs((until - asked) - GRACE) < timedelta(seconds=30), (until, asked)
        time.sleep(took + 60)  # longer than the early end took with Prometheus up
        assert second in store_valid_keys(cluster, NS, NAME).values()
        assert world.secret_keys().get("api-key-previous") == second
        assert _early_ends(world) == 1
        assert parse_time(world.status()["previousKey"]["validUntil"]) == until
        assert operator.alive
    finally:
        if driver is not None:
            driver.stop()
        operator.stop()
