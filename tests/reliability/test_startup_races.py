"""Start-up ordering: what the operator does before all its caches are filled.

kopf lists each resource on its own; the ApiKeys can arrive before the
RotationPolicies. A rotation requested while the operator was down must still
get the grace period of the key's policy, however the lists are ordered (here
the policies LIST is made 2 s slower than the rest).
"""

from __future__ import annotations

import pathlib
from datetime import datetime

import pytest

from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.process import OperatorProcess
from tests.integration.helpers import apikey, policy
from tests.support.faults_contract import converged

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_rotation_requested_while_down_gets_the_policys_grace_whatever_the_list_order(
    bare_cluster: LocalCluster, tmp_path: pathlib.Path
) -> None:
    cluster = bare_cluster
    cluster.apply(policy("hourly", rotateEvery="1h", gracePeriod="30s"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "hourly"}))
    process = OperatorProcess(cluster.kubeconfig, tmp_path)
    try:
        process.start()
        cluster.wait_for(lambda: converged(cluster.api, "payments", "billing", version=1),
                         timeout=30, what="provisioning")
        process.kill()
        cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "while-down"})
        cluster.api.traffic.inject(delay=2.0, times=1, verbs="list", resource="rotationpolicies")
        process.start()
        cluster.wait_for(lambda: converged(cluster.api, "payments", "billing", version=2),
                         timeout=30, what="the rotation")
    finally:
        process.stop()
    status = (cluster.apikey("payments", "billing") or {})["status"]
    grace = _at(status["previousKey"]["validUntil"]) - _at(status["lastRotationTime"])
    assert grace.total_seconds() <= 31, f"the rotation used a {grace} grace, not the policy's 30s"


def test_no_selector_verdict_before_the_namespaces_are_listed(
    bare_cluster: LocalCluster, tmp_path: pathlib.Path
) -> None:
    """Issue 18, finding 8: right after a start the keys were judged against no labels at all
    (Ready=False PolicyNotAllowed for every admitted key; a NotIn selector would have admitted
    keys it must refuse). Here the namespaces LIST is made 2 s slower than the rest."""
    cluster = bare_cluster
    cluster.api.ensure_namespace("payments", {"env": "prod"})
    cluster.api.ensure_namespace("team-a", {"env": "test"})
    cluster.apply(policy("prod-only", rotateEvery="30d",
                         namespaceSelector={"matchLabels": {"env": "prod"}}))
    cluster.apply(policy("not-prod", rotateEvery="30d", namespaceSelector={
        "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}))
    names = [f"key-{i}" for i in range(10)]
    for name in names:
        cluster.apply(apikey(name, rotationPolicyRef={"name": "prod-only"}))
    cluster.apply(apikey("refused", rotationPolicyRef={"name": "not-prod"}))
    cluster.api.traffic.inject(delay=2.0, times=1, verbs="list", resource="namespaces")
    process = OperatorProcess(cluster.kubeconfig, tmp_path)
    try:
        process.start()
        for name in names:
            cluster.wait_ready("payments", name, timeout=40)
        cluster.wait_reason("payments", "refused", "PolicyNotAllowed", timeout=40)
    finally:
        process.stop()
    for name in names:
        assert "PolicyNotAllowed" not in cluster.event_reasons("payments", name), name
    status = (cluster.apikey("payments", "refused") or {}).get("status") or {}
    assert "nextRotationTime" not in status, "a key the selector refuses was scheduled"
