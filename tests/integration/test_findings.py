"""The operator reports the audit's findings itself: a KeyTooOld Warning when a key outlives
its policy's maxKeyAge, and apikey_policy_findings for every key."""

from __future__ import annotations

import pytest

from apikey_operator import metrics
from apikey_operator.testing.harness import APIKEYS, LocalCluster
from tests.integration.helpers import apikey, policy

pytestmark = pytest.mark.integration


def finding(namespace: str, name: str, code: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "apikey_policy_findings", {"namespace": namespace, "name": name, "code": code})


def test_a_key_that_cannot_rotate_past_max_key_age_is_a_warning_and_a_finding(
    cluster: LocalCluster
) -> None:
    # A Secret that is not ours: pointing the key's projection at it blocks every rotation.
    cluster.api.create_object({"apiVersion": "v1", "kind": "Secret",
                               "metadata": {"name": "taken", "namespace": "payments"},
                               "stringData": {"x": "y"}})
    cluster.apply(policy("strict", rotateEvery="10s", gracePeriod="2s", maxKeyAge="12s"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "strict"}))
    cluster.wait_ready("payments", "billing")
    assert finding("payments", "billing", "KeyTooOld") is None
    cluster.api.patch_object(APIKEYS, "payments", "billing",
                             {"spec": {"secret": {"name": "taken"}}})
    cluster.wait_reason("payments", "billing", "SecretConflict")
    warnings = cluster.wait_for(
        lambda: [e for e in cluster.events("payments", "billing")
                 if e["reason"] == "KeyTooOld" and e["type"] == "Warning"],
        timeout=40, what="the KeyTooOld Warning")
    assert len(warnings) == 1
    assert "older than maxKeyAge 12s of RotationPolicy strict" in warnings[0]["message"]
    assert finding("payments", "billing", "KeyTooOld") == 1
    assert finding("payments", "billing", "NotReady") == 1

    # Unblocked, it rotates at once and the finding clears.
    cluster.api.patch_object(APIKEYS, "payments", "billing",
                             {"spec": {"secret": {"name": "billing"}}})
    cluster.wait_for(lambda: finding("payments", "billing", "KeyTooOld") is None, timeout=30,
                     what="the finding cleared")
    assert len([e for e in cluster.events("payments", "billing")
                if e["reason"] == "KeyTooOld"]) == 1


def test_a_key_without_a_policy_is_a_no_policy_finding(cluster: LocalCluster) -> None:
    cluster.apply(apikey("zombie"))
    cluster.wait_ready("payments", "zombie")
    cluster.wait_for(lambda: finding("payments", "zombie", "NoPolicy") == 1,
                     what="the NoPolicy finding")
    cluster.api.delete_object(APIKEYS, "payments", "zombie")
    cluster.wait_for(lambda: finding("payments", "zombie", "NoPolicy") is None,
                     what="the series removed with the key")
