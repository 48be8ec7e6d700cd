"""Crash consistency: SIGKILL the operator at every rotation step boundary, for every store.

Every (crash point, store) case gets a namespace of its own with one ApiKey. A
healthy operator process provisions them all; then, per case, the trigger that
walks the key through that step is fired (a rotate or revoke annotation, a
grace period ending after a rotation made by the healthy operator, a deleted
Secret) and an operator process limited to that case's namespace runs with
`APIKEY_OPERATOR_CRASH_AT` set until it kills itself with SIGKILL; finally a
healthy process converges everything and every invariant of the contract is
checked against the store itself. The cases run side by side (one process each)
so the whole matrix costs about one case's time; each case is still reported
(and can fail) on its own.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from apikey_operator.crashpoints import POINTS
from apikey_operator.keys import fingerprint
from apikey_operator.testing.harness import SECRETS, LocalCluster
from apikey_operator.testing.process import OperatorProcess
from tests.integration.helpers import apikey, policy
from tests.reliability.conftest import STORE_KINDS, store_config_for
from tests.reliability.test_store_move_crash import POINTS as MOVE_POINTS
from tests.support.faults_contract import (
    Expectation,
    StoreProbe,
    contract_violations,
    converged,
    decoded_data,
)
from tests.support.invariants import SecretTimeline

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

# The trigger that walks a converged key through each crash point.
TRIGGERS = {
    "after-create": "rotate",
    "after-project": "rotate",
    "after-promote": "rotate",
    "after-expire-secret": "expire",
    "after-revoke": "revoke",
    "after-restore": "restore",
}
# Long enough that the healthy operator is killed before any expire case expires.
GRACE = "12s"
TOKEN = "crash-1"


@dataclass
class Case:
    point: str
    store: str
    namespace: str
    first_key: str = ""
    exit_code: int | None = None
    problems: list[str] = field(default_factory=list)
    keys_seen: set[str] = field(default_factory=set)

    @property
    def trigger(self) -> str:
        return TRIGGERS[self.point]

    def expectation(self) -> Expectation:
        return {
            "rotate": Expectation(version=2, kept_previous=self.first_key, handled_rotate=TOKEN),
            "expire": Expectation(version=2, revoked=self.first_key, handled_rotate=TOKEN),
            "revoke": Expectation(version=2, revoked=self.first_key, handled_revoke=TOKEN),
            "restore": Expectation(version=1),
        }[self.trigger]

    def settled(self, cluster: LocalCluster) -> bool:
        expected = self.expectation()
        if not converged(cluster.api, self.namespace, "billing", version=expected.version):
            return False
        data = decoded_data(cluster.secret(self.namespace, "billing"))
        if self.trigger == "rotate":
            return data.get("api-key-previous") == self.first_key
        if self.trigger in ("expire", "revoke"):
            return "api-key-previous" not in data and self.first_key not in data.values()
        return data.get("api-key") == self.first_key


@dataclass
class MatrixRun:
    cases: dict[tuple[str, str], Case]
    timeline_violations: list[str]
    leaks: list[str]


def _fire(cluster: LocalCluster, case: Case) -> None:
    if case.trigger in ("rotate", "expire"):
        cluster.annotate(case.namespace, "billing", {"apikeys.dev/rotate": TOKEN})
    elif case.trigger == "revoke":
        cluster.annotate(case.namespace, "billing", {"apikeys.dev/revoke": TOKEN})
    else:
        cluster.api.delete_object(SECRETS, case.namespace, "billing")


def _wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixRun]:
    workdir = tmp_path_factory.mktemp("crash-matrix")
    stores = {kind: store_config_for(request, kind) for kind in STORE_KINDS}
    cases = {(point, kind): Case(point, kind, f"crash-{kind}-{i}")
             for i, point in enumerate(TRIGGERS) for kind in STORE_KINDS}
    with LocalCluster(start_operator=False, namespaces=[c.namespace for c in cases.values()],
                      workdir=workdir / "cluster") as cluster:
        probes = {kind: StoreProbe(cluster.api, *stores[kind]) for kind in STORE_KINDS}
        config = {name: cfg for name, cfg in stores.values() if name != "kubernetes"}
        cluster.apply(policy("short-grace", rotateEvery="1h", gracePeriod=GRACE))
        for case in cases.values():
            spec: dict[str, Any] = {"store": case.store}
            if case.trigger == "expire":
                spec["rotationPolicyRef"] = {"name": "short-grace"}
            cluster.apply(apikey("billing", namespace=case.namespace, **spec))
        timeline = SecretTimeline(cluster.api).start()
        processes: list[OperatorProcess] = []
        try:
            healthy = OperatorProcess(cluster.kubeconfig, workdir, stores=config, name="healthy")
            processes.append(healthy)
            healthy.start()
            cluster.wait_for(lambda: all(converged(cluster.api, c.namespace, "billing", version=1)
                                         for c in cases.values()),
                             timeout=120, what="provisioning of every case")
            for case in cases.values():
                case.first_key = decoded_data(cluster.secret(case.namespace, "billing"))["api-key"]
            # The expire cases rotate under the healthy operator: the crashing one then finds
            # a previous key whose grace ends (or has ended) and expires it.
            expiring = [c for c in cases.values() if c.trigger == "expire"]
            for case in expiring:
                _fire(cluster, case)
            cluster.wait_for(lambda: all(converged(cluster.api, c.namespace, "billing", version=2)
                                         for c in expiring), timeout=90, what="the rotations")
            healthy.kill()
            for case in cases.values():
                if case.trigger != "expire":
                    _fire(cluster, case)
            crashing = {}
            for key, case in cases.items():
                proc = OperatorProcess(cluster.kubeconfig, workdir, stores=config,
                                       name=f"crash-{case.namespace}",
                                       extra_args=["--namespace", case.namespace])
                processes.append(proc)
                crashing[key] = proc.start(env={"APIKEY_OPERATOR_CRASH_AT": case.point})
            # Generous bounds: 18 processes start at once, on a CI runner shared with others.
            _wait_until(lambda: not any(p.alive for p in crashing.values()), timeout=150)
            for key, proc in crashing.items():
                cases[key].exit_code = proc.wait_exit(0.1)
                proc.kill()
            healthy.start()
            _wait_until(lambda: all(c.settled(cluster) for c in cases.values()), timeout=120)
            for case in cases.values():
                probe = probes[case.store]
                expected = case.expectation()
                # Status and store settle a moment after the Secret: allow that.
                _wait_until(lambda c=case, p=probe, e=expected: not contract_violations(
                    cluster.api, p, c.namespace, "billing", e), timeout=10)
                case.problems = contract_violations(cluster.api, probe, case.namespace,
                                                    "billing", expected)
                if not case.settled(cluster):
                    case.problems.append("never settled after the restart")
                case.keys_seen = {case.first_key,
                                  *decoded_data(cluster.secret(case.namespace, "billing"))
                                  .values()}
            healthy.stop()
        finally:
            for proc in processes:
                proc.stop()
            timeline.stop()
        text = cluster.visible_text() + "\n".join(p.logs() for p in processes)
        leaks = sorted(fingerprint(k) for c in cases.values() for k in c.keys_seen if k in text)
        # The timeline reads the built-in store only: keep what it says about those cases.
        builtin = [v for v in timeline.violations if v.startswith("Secret crash-kubernetes-")]
        yield MatrixRun(cases, builtin, leaks)


def test_every_crash_point_is_covered() -> None:
    # A store move's own step (the old store's entry deleted) needs two stores: it has a
    # crash test of its own, which also crashes at every step the move shares with a rotation.
    assert set(TRIGGERS) | {"after-retire-store"} == set(POINTS)
    assert set(MOVE_POINTS) - set(TRIGGERS) == {"after-retire-store"}


@pytest.mark.parametrize("store_kind", STORE_KINDS)
@pytest.mark.parametrize("point", list(TRIGGERS))
def test_a_crash_at_each_step_converges_with_every_invariant(
    matrix: MatrixRun, point: str, store_kind: str
) -> None:
    case = matrix.cases[(point, store_kind)]
    assert case.exit_code == -signal.SIGKILL, \
        f"the operator did not crash at {point}: exit {case.exit_code}"
    assert case.problems == []


def test_the_secrets_never_held_a_key_the_store_did_not_hold_as_valid(
    matrix: MatrixRun
) -> None:
    """The built-in store cases, at every observed write, not only after convergence."""
    assert sum(1 for c in matrix.cases.values() if c.store == "kubernetes") == len(TRIGGERS)
    assert matrix.timeline_violations == []


def test_no_key_leaked_into_logs_events_status_or_metadata(matrix: MatrixRun) -> None:
    assert all(c.keys_seen for c in matrix.cases.values())
    assert matrix.leaks == []
