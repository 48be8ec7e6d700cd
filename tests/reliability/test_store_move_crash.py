"""A store move survives SIGKILL at every step: spec.store changes from the built-in store to
a real OpenBao, an operator process kills itself at one step of the move, and a healthy one
finishes it. Whatever the crash point, the new key ends current in OpenBao, the old one stays
valid in the built-in store for its grace and is then deleted there, each announced once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from apikey_operator.keys import fingerprint
from apikey_operator.testing.harness import APIKEYS, LocalCluster
from apikey_operator.testing.process import OperatorProcess
from tests.integration.helpers import apikey, policy
from tests.reliability.conftest import StoreConfigFactory
from tests.support.faults_contract import StoreProbe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# The steps of a move (create and project in the new store, promote there, then the old
# store's entry deleted once the grace ends), each with its crash point.
POINTS = ("after-create", "after-project", "after-promote", "after-expire-secret",
          "after-retire-store")
OLD_ENTRY = "ak.payments.billing"


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(start_operator=False) as local:
        yield local
        assert not local.leaks(), "keys leaked into logs, events, status or metadata"


def status(cluster: LocalCluster) -> dict[str, Any]:
    return dict((cluster.apikey("payments", "billing") or {}).get("status") or {})


@pytest.mark.parametrize("point", POINTS)
def test_a_store_move_converges_after_sigkill_at_each_of_its_steps(
        cluster: LocalCluster, store_config: StoreConfigFactory, point: str) -> None:
    vault = store_config("vault")
    stores = {"vault": vault[1]}
    healthy = OperatorProcess(cluster.kubeconfig, cluster.workdir, stores=stores,
                              name="healthy")
    healthy.start()
    try:
        cluster.apply(policy("move-grace", rotateEvery="1h", gracePeriod="8s"))
        cluster.apply(apikey("billing", rotationPolicyRef={"name": "move-grace"}))
        body = cluster.wait_ready("payments", "billing", timeout=60)
        first = cluster.secret_data("payments", "billing")["api-key"]
    finally:
        healthy.stop()
    uid = body["metadata"]["uid"]
    assert status(cluster)["store"] == "kubernetes"

    cluster.api.patch_object(APIKEYS, "payments", "billing", {"spec": {"store": "vault"}})
    crashing = OperatorProcess(cluster.kubeconfig, cluster.workdir, stores=stores,
                               name="crashing")
    crashing.start(env={"APIKEY_OPERATOR_CRASH_AT": point})
    try:
        assert crashing.wait_exit(90) is not None, f"the crash point {point} was never reached"
    finally:
        crashing.stop()

    probe = StoreProbe(cluster.api, "vault", vault[1])
    again = OperatorProcess(cluster.kubeconfig, cluster.workdir, stores=stores,
                            name="healthy-again")
    again.start()
    try:
        # OpenBao numbers versions itself: the moved key is told by its fingerprint.
        cluster.wait_for(lambda: status(cluster).get("store") == "vault"
                         and (status(cluster).get("currentKey") or {}).get("fingerprint")
                         not in (None, fingerprint(first)),
                         timeout=60, what="the key current in OpenBao")
        in_vault = list(probe.state("payments", "billing", uid).valid_keys().values())
        assert len(in_vault) == 1
        second = in_vault[0]
        assert status(cluster)["currentKey"]["fingerprint"] == fingerprint(second)
        assert cluster.secret_data("payments", "billing")["api-key"] == second
        # The grace ends: the first key leaves the Secret, then the old entry goes.
        cluster.wait_for(lambda: cluster.secret("apikey-operator", OLD_ENTRY) is None
                         and not status(cluster).get("formerStores"),
                         timeout=60, what="the old store's entry deleted")
        assert cluster.secret_data("payments", "billing") == {"api-key": second}
        assert first not in probe.state("payments", "billing", uid).valid_keys().values()
        reasons = cluster.wait_for(
            lambda: (r := cluster.event_reasons("payments", "billing")).count("GraceExpired")
            and r, timeout=30, what="the GraceExpired Event")
        assert reasons.count("Rotated") == 1, reasons
        assert reasons.count("GraceExpired") == 1, reasons
        assert cluster.condition("payments", "billing")["status"] == "True"
    finally:
        again.stop()
