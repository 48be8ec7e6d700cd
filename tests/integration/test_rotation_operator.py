"""Rotation with the real operator on the emulated API: requests, schedule, revoke, drift."""

from __future__ import annotations

import time

import pytest

from apikey_operator import keys
from apikey_operator.testing.harness import APIKEYS, POLICIES, SECRETS, LocalCluster
from tests.integration.helpers import apikey, policy, store_valid_keys
from tests.support.invariants import SecretTimeline

pytestmark = pytest.mark.integration


def current(cluster: LocalCluster, name: str = "billing") -> str:
    return cluster.secret_data("payments", name)["api-key"]


def test_rotate_annotation_keeps_the_old_key_as_previous_and_is_acted_on_once(
    cluster: LocalCluster
) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    old = current(cluster)
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "2026-11-28"})
    cluster.wait_for(lambda: (cluster.apikey("payments", "billing") or {}).get("status", {})
                     .get("currentKey", {}).get("version") == 2, what="version 2")
    data = cluster.secret_data("payments", "billing")
    assert data["api-key-previous"] == old and data["api-key"] != old
    status = cluster.apikey("payments", "billing")["status"]  # type: ignore[index]
    assert status["lastHandledRotate"] == "2026-11-28"
    assert status["previousKey"]["fingerprint"] == keys.fingerprint(old)
    assert status["previousKey"]["version"] == 1
    assert set(store_valid_keys(cluster, "payments", "billing").values()) == set(data.values())
    cluster.wait_for(lambda: "Rotated" in cluster.event_reasons("payments", "billing"),
                     what="the Rotated event")
    # The same value applied again (a GitOps re-sync) does nothing.
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": None})
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "2026-11-28"})
    time.sleep(1.0)
    assert cluster.apikey("payments", "billing")["status"]["currentKey"]["version"] == 2  # type: ignore[index]
    assert cluster.event_reasons("payments", "billing").count("Rotated") == 1


def test_revoke_removes_the_old_key_from_secret_and_store_at_once(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    old = current(cluster)
    cluster.annotate("payments", "billing", {"apikeys.dev/revoke": "incident-42"})
    cluster.wait_for(lambda: current(cluster) != old, timeout=5, what="a new key")
    cluster.wait_for(lambda: old not in store_valid_keys(cluster, "payments", "billing").values(),
                     timeout=5, what="the old key revoked in the store")
    assert set(cluster.secret_data("payments", "billing")) == {"api-key"}
    body = cluster.wait_for(lambda: (b := cluster.apikey("payments", "billing")) and
                            b["status"].get("lastHandledRevoke") == "incident-42" and b)
    assert body["status"].get("previousKey") is None
    cluster.wait_for(lambda: "Revoked" in cluster.event_reasons("payments", "billing"),
                     what="the Revoked event")


def test_a_fast_policy_rotates_on_time_and_expires_the_old_key_on_time(
    cluster: LocalCluster
) -> None:
    timeline = SecretTimeline(cluster.api).start()
    try:
        cluster.apply(policy("fast", rotateEvery="10s", gracePeriod="3s"))
        cluster.apply(apikey("billing", rotationPolicyRef={"name": "fast"}))
        cluster.wait_ready("payments", "billing")
        cluster.wait_reason("payments", "billing", "PolicyApplied", type_="Scheduled")
        first = current(cluster)
        cluster.wait_for(lambda: current(cluster) != first, timeout=20, what="the rotation")
        rotated_at = time.monotonic()
        assert cluster.secret_data("payments", "billing")["api-key-previous"] == first
        cluster.wait_for(lambda: "api-key-previous" not in cluster.secret_data("payments",
                                                                               "billing"),
                         timeout=10, what="the grace to end")
        grace_seen = time.monotonic() - rotated_at
        assert 1.5 < grace_seen < 8, f"the old key stayed {grace_seen:.1f}s for a 3s grace"
        # Out of the Secret first, then revoked in the store a moment later.
        cluster.wait_for(lambda: first not in store_valid_keys(cluster, "payments",
                                                               "billing").values(),
                         timeout=5, what="the old key revoked in the store")
        cluster.wait_for(lambda: "GraceExpired" in cluster.event_reasons("payments", "billing"),
                         what="the GraceExpired event")
    finally:
        timeline.stop()
    assert timeline.consumer_versions_seen >= 3
    assert timeline.violations == []


def test_an_idle_key_makes_no_api_requests(cluster: LocalCluster) -> None:
    cluster.apply(policy("monthly", rotateEvery="30d"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "monthly"}))
    cluster.wait_ready("payments", "billing")
    # The creation's last write: the policy counts its new key (batched every 2 s).
    cluster.wait_for(lambda: ((cluster.api.get_object(POLICIES, None, "monthly") or {})
                              .get("status") or {}).get("keys") == 1, what="keys: 1")
    time.sleep(1.0)  # let the provisioning's own events settle
    mark = cluster.api.traffic.mark()
    time.sleep(30)
    requests = cluster.api.traffic.records(since=mark)
    assert requests == [], [f"{r.verb} {r.path}" for r in requests]


def test_a_deleted_secret_is_restored_with_the_same_key(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    key = current(cluster)
    cluster.api.delete_object(SECRETS, "payments", "billing")
    cluster.wait_for(lambda: cluster.secret("payments", "billing") is not None, what="restore")
    assert current(cluster) == key
    cluster.wait_for(lambda: "SecretRestored" in cluster.event_reasons("payments", "billing"),
                     what="the SecretRestored event")
    assert cluster.apikey("payments", "billing")["status"]["currentKey"]["version"] == 1  # type: ignore[index]


def test_an_edited_secret_is_restored(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    key = current(cluster)
    cluster.api.patch_object(SECRETS, "payments", "billing",
                             {"data": {"api-key": "dGFtcGVyZWQ=", "extra": "eA=="}})
    cluster.wait_for(lambda: cluster.secret_data("payments", "billing") == {"api-key": key},
                     what="the edit to be undone")


def test_restart_targets_roll_once_per_rotation(cluster: LocalCluster) -> None:
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "billing-api", "namespace": "payments"},
        "spec": {"selector": {"matchLabels": {"app": "b"}},
                 "template": {"metadata": {"labels": {"app": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    cluster.api.create_object(deployment)
    # A short grace: the second rotation waits for the first one's grace to end.
    cluster.apply(policy("short-grace", rotateEvery="1h", gracePeriod="3s"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "short-grace"}, restartTargets=[
        {"kind": "Deployment", "name": "billing-api"},
        {"kind": "StatefulSet", "name": "missing"}]))
    cluster.wait_ready("payments", "billing")

    def template_annotations() -> dict[str, str]:
        obj = cluster.api.get_object("apps/v1/deployments", "payments", "billing-api") or {}
        return dict(obj["spec"]["template"]["metadata"].get("annotations") or {})

    assert template_annotations() == {}, "provisioning must not restart anything"
    generation_before = cluster.api.get_object(
        "apps/v1/deployments", "payments", "billing-api")["metadata"]["generation"]  # type: ignore[index]
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "one"})
    cluster.wait_for(template_annotations, what="the restart annotation")
    first = template_annotations()
    cluster.wait_for(lambda: "RestartTargetNotFound" in
                     cluster.event_reasons("payments", "billing"), what="missing target event")
    time.sleep(1.5)
    deployment_after = cluster.api.get_object("apps/v1/deployments", "payments", "billing-api")
    assert deployment_after["metadata"]["generation"] == generation_before + 1  # type: ignore[index]
    assert cluster.event_reasons("payments", "billing").count("RestartTriggered") == 1
    assert cluster.condition("payments", "billing")["status"] == "True"
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "two"})
    cluster.wait_for(lambda: template_annotations() != first, what="the second restart")
    time.sleep(1.0)
    assert cluster.event_reasons("payments", "billing").count("RestartTriggered") == 2


def test_a_policy_edit_replans_without_a_restart(cluster: LocalCluster) -> None:
    cluster.apply(policy("p", rotateEvery="30d"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "p"}))
    cluster.wait_reason("payments", "billing", "PolicyApplied", type_="Scheduled")
    first = cluster.apikey("payments", "billing")["status"]["nextRotationTime"]  # type: ignore[index]
    cluster.api.patch_object(POLICIES, None, "p", {"spec": {"rotateEvery": "10s",
                                                            "gracePeriod": "2s"}})
    cluster.wait_for(lambda: cluster.apikey("payments", "billing")["status"]  # type: ignore[index]
                     .get("nextRotationTime") not in (None, first), what="re-planning")
    cluster.wait_for(lambda: cluster.apikey("payments", "billing")["status"]  # type: ignore[index]
                     ["currentKey"]["version"] >= 2, timeout=20, what="a rotation under 10s")


def test_deleting_the_policy_leaves_the_key_valid_and_unscheduled(cluster: LocalCluster) -> None:
    cluster.apply(policy("p", rotateEvery="30d"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "p"}))
    cluster.wait_ready("payments", "billing")
    key = current(cluster)
    cluster.api.delete_object(POLICIES, None, "p")
    cond = cluster.wait_reason("payments", "billing", "PolicyNotFound", type_="Scheduled")
    assert "not found" in cond["message"]
    body = cluster.apikey("payments", "billing")
    assert body is not None
    assert "nextRotationTime" not in body["status"] or body["status"]["nextRotationTime"] is None
    assert cluster.condition("payments", "billing")["status"] == "True"
    assert current(cluster) == key


def test_an_invalid_policy_stalls_its_keys_naming_the_field(cluster: LocalCluster) -> None:
    cluster.apply(policy("bad", rotateEvery="30d", gracePeriod="40d"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "bad"}))
    cond = cluster.wait_reason("payments", "billing", "InvalidSpec", type_="Stalled")
    assert "spec.gracePeriod 40d is not shorter than spec.rotateEvery 30d" in cond["message"]


def test_a_namespace_the_policy_does_not_admit_gets_policy_not_allowed(
    cluster: LocalCluster
) -> None:
    cluster.api.ensure_namespace("dev", {"env": "dev"})
    cluster.apply(policy("prod-only", rotateEvery="30d",
                         namespaceSelector={"matchLabels": {"env": "prod"}}))
    cluster.apply(apikey("billing", namespace="dev", rotationPolicyRef={"name": "prod-only"}))
    cond = cluster.wait_reason("dev", "billing", "PolicyNotAllowed")
    assert cond["status"] == "False" and "does not admit namespace dev" in cond["message"]
    cluster.wait_for(lambda: "PolicyNotAllowed" in cluster.event_reasons("dev", "billing"),
                     what="the PolicyNotAllowed event")
    # Labelling the namespace admits it without touching the ApiKey.
    cluster.api.ensure_namespace("dev", {"env": "prod"})
    cluster.wait_ready("dev", "billing")


def test_a_key_format_change_rotates_gracefully(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    old = current(cluster)
    cluster.api.patch_object(APIKEYS, "payments", "billing",
                             {"spec": {"key": {"encoding": "hex", "length": 16}}})
    cluster.wait_for(lambda: current(cluster) != old, what="the format rotation")
    data = cluster.secret_data("payments", "billing")
    assert keys.matches_format(data["api-key"], keys.KeyFormat(16, "hex"))
    assert data["api-key-previous"] == old


def test_due_work_missed_while_the_operator_was_down_is_done_at_once(
    cluster: LocalCluster
) -> None:
    cluster.apply(policy("fast", rotateEvery="10s", gracePeriod="3s"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "fast"}))
    cluster.wait_ready("payments", "billing")
    first = current(cluster)
    cluster.stop_operator_thread()
    time.sleep(11)  # the rotation falls due while nobody is watching
    assert current(cluster) == first
    cluster.start_operator_thread()
    cluster.wait_for(lambda: current(cluster) != first, timeout=15,
                     what="the overdue rotation right after the restart")
    cluster.wait_for(lambda: (cluster.apikey("payments", "billing") or {}).get("status", {})
                     .get("currentKey", {}).get("version") == 2, what="status version 2")
    # And a grace that ends while the operator is down is expired right after it returns.
    cluster.stop_operator_thread()
    time.sleep(4)
    assert "api-key-previous" in cluster.secret_data("payments", "billing")
    cluster.start_operator_thread()
    cluster.wait_for(lambda: "api-key-previous" not in cluster.secret_data("payments",
                                                                           "billing"),
                     timeout=15, what="the overdue grace expiry right after the restart")


def test_the_operator_never_writes_spec_or_annotations_of_an_apikey(
    cluster: LocalCluster
) -> None:
    """GitOps tools compare spec and metadata with Git: the operator must leave them alone."""
    manifest = apikey("billing", key={"prefix": "bill_"}, scopes=["a:read"])
    manifest["metadata"]["annotations"] = {"team": "payments"}
    manifest["metadata"]["labels"] = {"app": "billing"}
    created = cluster.apply(manifest)
    cluster.wait_ready("payments", "billing")
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "g1"})
    cluster.wait_for(lambda: (cluster.apikey("payments", "billing") or {}).get("status", {})
                     .get("lastHandledRotate") == "g1", what="the rotation")
    after = cluster.apikey("payments", "billing")
    assert after is not None
    assert after["spec"] == created["spec"]
    assert after["metadata"]["annotations"] == {"team": "payments", "apikeys.dev/rotate": "g1"}
    assert after["metadata"]["labels"] == {"app": "billing"}
    assert after["metadata"]["generation"] == created["metadata"]["generation"]
    assert after["metadata"]["finalizers"] == ["apikeys.dev/finalizer"]
