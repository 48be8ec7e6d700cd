"""Kubernetes API faults: 409 conflicts on writes, 500s, 429 with Retry-After, slow
responses and watch streams cut again and again, each aimed at one ApiKey's objects so
that all of them share one window and each is reported on its own.

During the window each key is asked to rotate. The operator must not hammer the
API (requests per faulty object are counted), must keep serving keys created
during the window, and once the faults stop must finish every rotation once,
with every invariant of the contract holding (checked against the built-in store).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.kube_traffic import WRITE_VERBS, Fault
from tests.integration.helpers import apikey
from tests.support.faults_contract import (
    Expectation,
    StoreProbe,
    contract_violations,
    converged,
    decoded_data,
)
from tests.support.invariants import SecretTimeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WINDOW = 8.0
# Requests against one faulty object in the window: each attempt costs a handful, the
# backoff allows about five attempts; a hot loop makes hundreds.
MAX_REQUESTS = 40
RECOVERY = 20.0
FAULTS = ("secret-409", "secret-500", "secret-429", "status-500", "slow", "watch-cuts")


@dataclass
class ApiCase:
    fault: str
    name: str
    first_key: str = ""
    requests: int = -1
    problems: list[str] = field(default_factory=list)


@dataclass
class ApiRun:
    cases: dict[str, ApiCase]
    late_key_ready: bool
    timeline_violations: list[str]
    watch_cuts: int


def _inject(cluster: LocalCluster, fault: str, name: str) -> list[Fault]:
    traffic = cluster.api.traffic
    if fault == "secret-409":
        return [traffic.inject(status=409, times=None, verbs=WRITE_VERBS, resource="secrets",
                               namespace="payments", name=name)]
    if fault == "secret-500":
        return [traffic.inject(status=500, times=None, resource="secrets",
                               namespace="payments", name=name)]
    if fault == "secret-429":
        return [traffic.inject(status=429, retry_after=1, times=None, resource="secrets",
                               namespace="payments", name=name)]
    if fault == "status-500":
        return [traffic.inject(status=500, times=None, resource="apikeys", name=name,
                               subresource="status", match_subresource=True)]
    if fault == "slow":
        return [traffic.inject(delay=1.0, times=None, name=name),
                traffic.inject(delay=1.0, times=None, name=f"ak.payments.{name}")]
    return []


@pytest.fixture(scope="module")
def api_faults() -> Iterator[ApiRun]:
    with LocalCluster() as cluster:
        probe = StoreProbe(cluster.api, "kubernetes")
        cases = {f: ApiCase(f, f"k-{f}") for f in FAULTS}
        for case in cases.values():
            cluster.apply(apikey(case.name))
        for case in cases.values():
            cluster.wait_ready("payments", case.name)
            case.first_key = decoded_data(cluster.secret("payments", case.name))["api-key"]
        timeline = SecretTimeline(cluster.api).start()
        faults = [f for c in cases.values() for f in _inject(cluster, c.fault, c.name)]
        mark = cluster.api.traffic.mark()
        started = time.monotonic()
        cuts = 0
        late_ready = False
        try:
            for case in cases.values():
                cluster.annotate("payments", case.name, {"apikeys.dev/rotate": "api-faults"})
            cluster.apply(apikey("late"))
            while time.monotonic() < started + WINDOW:
                cuts += cluster.api.cut_watches()
                time.sleep(0.5)
                if not late_ready:
                    late_ready = converged(cluster.api, "payments", "late")
            for case in cases.values():
                case.requests = len(cluster.api.traffic.records(since=mark, name=case.name))
        finally:
            for fault in faults:
                cluster.api.traffic.remove(fault)
        # Recovery is bounded by the worker's backoff (seconds), not by a daemon restart.
        _wait(lambda: all(converged(cluster.api, "payments", c.name, version=2)
                          for c in cases.values()), RECOVERY)
        for case in cases.values():
            expected = Expectation(version=2, kept_previous=case.first_key,
                                   handled_rotate="api-faults")
            _wait(lambda c=case, e=expected: not contract_violations(
                cluster.api, probe, "payments", c.name, e), 10)
            case.problems = contract_violations(cluster.api, probe, "payments", case.name,
                                                expected)
            if not converged(cluster.api, "payments", case.name, version=2):
                case.problems.append(f"not Ready at version 2 {RECOVERY}s after the faults")
        late_ready = late_ready or converged(cluster.api, "payments", "late")
        timeline.stop()
        cluster.stop_operator_thread()
        leaks = cluster.leaks()
        assert not leaks, f"keys leaked into logs, events, status or metadata: {leaks}"
        yield ApiRun(cases, late_ready, list(timeline.violations), cuts)


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.1)


@pytest.mark.parametrize("fault", FAULTS)
def test_an_api_fault_is_backed_off_and_the_rotation_completes_once(
    api_faults: ApiRun, fault: str
) -> None:
    case = api_faults.cases[fault]
    assert case.requests <= MAX_REQUESTS, f"{case.requests} requests in {WINDOW}s: a hot loop"
    assert case.problems == []


def test_keys_created_while_watches_are_cut_are_still_served(api_faults: ApiRun) -> None:
    assert api_faults.watch_cuts > 0
    assert api_faults.late_key_ready


def test_no_secret_ever_held_a_key_the_store_did_not_hold_as_valid(api_faults: ApiRun) -> None:
    assert api_faults.timeline_violations == []
