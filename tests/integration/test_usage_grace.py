"""Usage-aware grace for real: a real Prometheus scrapes two example services (two pods,
each verifying keys with KeyRing over its own projected volume) while a driver sends
requests with the current or the previous key; the operator, on the real control plane,
asks that Prometheus once per interval for every key in its grace.

The operator's query interval is 1s here (the configuration file's floor is the contract's
one minute; tests set it on the Settings object), its window 3s, the scrape interval 1s.
"""

from __future__ import annotations

import base64
import math
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from apikey_operator import metrics
from apikey_operator.stores.base import parse_time
from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.kubelet import SecretVolume, SecretVolumeSync
from apikey_operator.testing.prometheus import PrometheusServer
from apikey_operator.testing.servers import free_port
from apikey_operator.usage import UsageConfig
from tests.integration.helpers import apikey, policy, store_valid_keys

pytestmark = pytest.mark.integration

NS, NAME = "payments", "billing"
SERVICE = Path(__file__).resolve().parents[2] / "examples" / "consumer" / "service.py"
INTERVAL = timedelta(seconds=1)
WINDOW = timedelta(seconds=3)


def queries(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("apikey_usage_queries_total",
                                             {"result": result}) or 0.0


@dataclass
class Driver:
    """Sends requests to every service in a background thread, with the key `pick` names."""

    bases: list[str]
    key: Callable[[], str | None]
    sent: int = 0
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Driver:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="driver")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            key = self.key()
            if key is None:
                continue
            for base in self.bases:
                request = urllib.request.Request(f"{base}/invoices",
                                                 headers={"Authorization": f"Bearer {key}"})
                try:
                    with urllib.request.urlopen(request, timeout=2):
                        pass
                except urllib.error.HTTPError:
                    self.refused += 1
                except OSError:
                    continue
                self.sent += 1


@dataclass
class Usage:
    cluster: LocalCluster
    prometheus: PrometheusServer
    bases: list[str]
    tmp: Path
    syncs: list[SecretVolumeSync] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def secret_keys(self) -> dict[str, str]:
        """The Secret's data, decoded (the test plays the consumers' side)."""
        secret = self.cluster.secret(NS, NAME) or {}
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def status(self) -> dict:  # type: ignore[type-arg]
        return dict((self.cluster.apikey(NS, NAME) or {}).get("status") or {})

    def version(self) -> int | None:
        return (self.status().get("currentKey") or {}).get("version")

    def reasons(self) -> list[str]:
        return self.cluster.event_reasons(NS, NAME)

    def start_consumers(self, ports: list[int]) -> None:
        """Two pods: a volume each (its own kubelet), an example service each."""
        def data() -> dict[str, str] | None:
            secret = self.cluster.secret(NS, NAME)
            return None if secret is None else dict(secret.get("data") or {})

        for i, port in enumerate(ports):
            volume = SecretVolume(self.tmp / f"pod-{i}")
            sync = SecretVolumeSync(volume, data, period=0.1).start()
            self.syncs.append(sync)
            log = (self.tmp / f"service-{i}.log").open("wb")
            self.processes.append(subprocess.Popen(
                [sys.executable, str(SERVICE), "--host", "127.0.0.1", "--port", str(port),
                 "--keys-dir", volume.directory], stdout=log, stderr=subprocess.STDOUT))
            log.close()
        for base in self.bases:
            self.cluster.wait_for(lambda b=base: _answers(f"{b}/healthz"), timeout=30,
                                  what=f"the example service at {base}")

    def rotate(self) -> datetime:
        """Rotate now; returns the previous key's promised grace end."""
        self.cluster.annotate(NS, NAME, {"apikeys.dev/rotate": "usage-test"})
        previous = self.cluster.wait_for(lambda: self.status().get("previousKey"),
                                         what="the rotation")
        # Both pods hold the new key before traffic moves to it.
        new = self.secret_keys()["api-key"]
        self.cluster.wait_for(
            lambda: all(s.volume.read().get("api-key") == new.encode() for s in self.syncs),
            what="the new key in both pods")
        return parse_time(previous["validUntil"])

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(10)
        for sync in self.syncs:
            sync.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def usage_world(tmp_path: Path, *, scrape: bool = True,
                operator_thread: bool = True) -> Iterator[Usage]:
    """Prometheus, two example services' ports and a control plane. With `operator_thread`
    an in-process operator with the test interval and window; without, the test starts
    `OperatorProcess`es itself (with the configuration file's own limits)."""
    ports = [free_port(), free_port()]
    targets = [f"127.0.0.1:{p}" for p in ports] if scrape else []
    with PrometheusServer(targets=targets, scrape_interval="1s") as prometheus, \
            LocalCluster(**({"usage": UsageConfig(url=prometheus.url,
                                                  timeout=timedelta(seconds=2),
                                                  interval=INTERVAL, window=WINDOW)}
                            if operator_thread else {"start_operator": False})) as cluster:
        world = Usage(cluster, prometheus, [f"http://127.0.0.1:{p}" for p in ports], tmp_path)
        world.ports = ports  # type: ignore[attr-defined]
        try:
            yield world
        finally:
            world.close()
            if operator_thread:
                cluster.stop_operator_thread()
            assert cluster.leaks() == [], "a key leaked into logs, events, status or metadata"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Usage]:
    yield from usage_world(tmp_path)


@pytest.fixture
def world_without_data(tmp_path: Path) -> Iterator[Usage]:
    yield from usage_world(tmp_path, scrape=False)


def provision(world: Usage, grace: str, unused_for: str, minimum: str) -> None:
    world.cluster.apply(policy("usage", rotateEvery="1h", gracePeriod=grace,
                               earlyExpiry={"unusedFor": unused_for, "minimumGrace": minimum}))
    world.cluster.apply(apikey(NAME, rotationPolicyRef={"name": "usage"}))
    world.cluster.wait_ready(NS, NAME)
    world.start_consumers(world.ports)  # type: ignore[attr-defined]


def test_the_grace_ends_early_once_traffic_has_moved_to_the_new_key(world: Usage) -> None:
    provision(world, grace="60s", unused_for="5s", minimum="6s")
    driver = Driver(world.bases, lambda: world.secret_keys().get("api-key")).start()
    try:
        world.cluster.wait_for(lambda: driver.sent > 20, what="traffic with the first key")
        old = world.secret_keys()["api-key"]
        promised = world.rotate()
        ended = world.cluster.wait_for(
            lambda: [e for e in world.cluster.events(NS, NAME)
                     if e["reason"] == "GraceEndedEarly"], timeout=45,
            what="GraceEndedEarly")
        ended_at = datetime.now(UTC)
    finally:
        driver.stop()
    assert ended_at < promised  # the point of it: before the grace's own end
    message = ended[0]["message"]
    assert "before its grace end" in message and "no consumer verified it for" in message
    assert "verified" in message and "times in the last 3s" in message
    assert world.status().get("previousKey") is None
    assert "api-key-previous" not in world.secret_keys()
    assert old not in store_valid_keys(world.cluster, NS, NAME).values()
    assert "GraceExpired" not in world.reasons()
    assert queries("success") > 0


def test_no_early_end_while_the_old_key_is_used_and_a_warning_near_the_end(
    world: Usage
) -> None:
    provision(world, grace="30s", unused_for="3s", minimum="3s")
    keys: dict[str, str] = {}
    turn = iter(range(10**9))

    def alternate() -> str | None:
        # Half the requests still come with the old key, until it is refused.
        return keys.get("old") if next(turn) % 2 and keys.get("old") else keys.get("new")

    keys["new"] = world.secret_keys()["api-key"]
    driver = Driver(world.bases, alternate).start()
    try:
        keys["old"] = keys["new"]
        promised = world.rotate()
        keys["new"] = world.secret_keys()["api-key"]
        world.cluster.wait_for(lambda: "GraceExpired" in world.reasons(), timeout=60,
                               what="the grace to end on time")
        expired_at = datetime.now(UTC)
    finally:
        driver.stop()
    reasons = world.reasons()
    assert "GraceEndedEarly" not in reasons
    assert reasons.count("PreviousKeyInUse") == 1
    warning = next(e for e in world.cluster.events(NS, NAME)
                   if e["reason"] == "PreviousKeyInUse")
    assert warning["type"] == "Warning"
    assert "was verified" in warning["message"] and "it is revoked then all the same" in (
        warning["message"])
    count = int(warning["message"].split("was verified ")[1].split(" ")[0])
    assert count > 0
    assert expired_at >= promised  # the deadline held, neither earlier nor skipped


def test_no_early_end_when_prometheus_is_down(world: Usage) -> None:
    provision(world, grace="15s", unused_for="3s", minimum="3s")
    driver = Driver(world.bases, lambda: world.secret_keys().get("api-key")).start()
    try:
        world.prometheus.stop()
        failures = queries("failure")
        promised = world.rotate()
        world.cluster.wait_for(lambda: "GraceExpired" in world.reasons(), timeout=45,
                               what="the grace to end on time")
        expired_at = datetime.now(UTC)
    finally:
        driver.stop()
    assert "GraceEndedEarly" not in world.reasons()
    assert expired_at >= promised
    assert queries("failure") > failures


def test_no_early_end_when_prometheus_has_no_data(world_without_data: Usage) -> None:
    world = world_without_data
    provision(world, grace="15s", unused_for="3s", minimum="3s")
    driver = Driver(world.bases, lambda: world.secret_keys().get("api-key")).start()
    try:
        successes = queries("success")
        promised = world.rotate()
        world.cluster.wait_for(lambda: "GraceExpired" in world.reasons(), timeout=45,
                               what="the grace to end on time")
        expired_at = datetime.now(UTC)
    finally:
        driver.stop()
    assert "GraceEndedEarly" not in world.reasons()
    assert expired_at >= promised
    assert queries("success") > successes  # it asked, and the answer proved nothing


def test_one_batched_query_per_interval_and_none_without_a_key_in_grace(world: Usage) -> None:
    world.cluster.apply(policy("usage", rotateEvery="1h", gracePeriod="8s",
                               earlyExpiry={"unusedFor": "5s", "minimumGrace": "5s"}))
    names = ["a", "b", "c"]
    for name in names:
        world.cluster.apply(apikey(name, rotationPolicyRef={"name": "usage"}))
    for name in names:
        world.cluster.wait_ready(NS, name)
    idle = queries("success") + queries("failure")
    time.sleep(3)  # three intervals with no key in its grace
    assert queries("success") + queries("failure") == idle

    started = time.monotonic()
    for name in names:
        world.cluster.annotate(NS, name, {"apikeys.dev/rotate": "count"})

    def all_expired() -> bool:
        return all("GraceExpired" in world.cluster.event_reasons(NS, n) for n in names)

    world.cluster.wait_for(all_expired, timeout=60, what="every grace to end")
    elapsed = time.monotonic() - started
    made = queries("success") + queries("failure") - idle
    assert made >= 1
    # Three keys in their grace, one query per interval for all of them, never one per key.
    assert made <= math.ceil(elapsed / INTERVAL.total_seconds()) + 1
    after = queries("success") + queries("failure")
    time.sleep(3)  # no key in its grace any more: no query
    assert queries("success") + queries("failure") == after
