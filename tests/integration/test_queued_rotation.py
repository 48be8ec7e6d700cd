"""No grace is ever cut: a rotation within a grace waits for it, visibly and durably; policies
report their own health; a missing policy is a Warning, not only a condition."""

from __future__ import annotations

import time

import pytest

from apikey_operator import keys
from apikey_operator.handlers import POLICY_STATUS_INTERVAL
from apikey_operator.stores.base import parse_time
from apikey_operator.testing.harness import APIKEYS, POLICIES, LocalCluster
from tests.integration.helpers import apikey, policy, store_valid_keys

pytestmark = pytest.mark.integration


def status(cluster: LocalCluster, name: str = "billing") -> dict:  # type: ignore[type-arg]
    return dict((cluster.apikey("payments", name) or {}).get("status") or {})


def version(cluster: LocalCluster, name: str = "billing") -> int | None:
    return (status(cluster, name).get("currentKey") or {}).get("version")


def test_a_second_rotation_within_a_grace_waits_for_it_and_survives_a_restart(
    cluster: LocalCluster
) -> None:
    cluster.apply(policy("short-grace", rotateEvery="1h", gracePeriod="12s"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "short-grace"}))
    cluster.wait_ready("payments", "billing")
    first = cluster.secret_data("payments", "billing")["api-key"]
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "r1"})
    cluster.wait_for(lambda: version(cluster) == 2, what="version 2")
    valid_until = parse_time(status(cluster)["previousKey"]["validUntil"])

    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "r2"})
    queued = cluster.wait_for(lambda: status(cluster).get("queuedRotation"),
                              what="the queued rotation in status")
    assert queued["trigger"] == "rotate"
    assert parse_time(queued["runsAt"]) == valid_until
    cluster.wait_for(lambda: "RotationQueued" in cluster.event_reasons("payments", "billing"),
                     what="the RotationQueued Event")
    # The first key keeps its promised grace: still in the Secret and valid in the store.
    assert cluster.secret_data("payments", "billing")["api-key-previous"] == first
    assert first in store_valid_keys(cluster, "payments", "billing").values()
    assert version(cluster) == 2

    # A restart while it waits neither loses nor doubles the queued rotation.
    cluster.stop_operator_thread()
    cluster.start_operator_thread()
    cluster.wait_for(lambda: version(cluster) == 3, timeout=30, what="the queued rotation")
    after = status(cluster)
    assert parse_time(after["currentKey"]["createdAt"]) >= valid_until
    assert after["lastHandledRotate"] == "r2"
    assert after.get("queuedRotation") is None
    assert after["previousKey"]["version"] == 2
    assert first not in store_valid_keys(cluster, "payments", "billing").values()
    assert first not in cluster.secret_data("payments", "billing").values()
    reasons = cluster.wait_for(
        lambda: (r := cluster.event_reasons("payments", "billing")).count("Rotated") == 2 and r,
        what="the second Rotated Event")
    assert reasons.count("RotationQueued") == 1
    assert reasons.count("GraceExpired") == 1
    assert reasons.count("Provisioned") == 1


def test_a_revoke_within_a_grace_revokes_both_old_versions_and_names_them(
    cluster: LocalCluster
) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    v1 = cluster.secret_data("payments", "billing")["api-key"]
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "r1"})
    cluster.wait_for(lambda: version(cluster) == 2, what="version 2")
    v2 = cluster.secret_data("payments", "billing")["api-key"]
    cluster.annotate("payments", "billing", {"apikeys.dev/revoke": "leak"})
    cluster.wait_for(lambda: version(cluster) == 3, what="version 3")
    valid = store_valid_keys(cluster, "payments", "billing")
    assert v1 not in valid.values() and v2 not in valid.values() and list(valid) == [3]
    assert set(cluster.secret_data("payments", "billing")) == {"api-key"}
    revoked = cluster.wait_for(
        lambda: [e for e in cluster.events("payments", "billing") if e["reason"] == "Revoked"],
        what="the Revoked Event")
    assert len(revoked) == 1
    message = revoked[0]["message"]
    assert f"1 ({keys.fingerprint(v1)})" in message and f"2 ({keys.fingerprint(v2)})" in message


def policy_status(cluster: LocalCluster, name: str) -> dict:  # type: ignore[type-arg]
    return dict((cluster.api.get_object(POLICIES, None, name) or {}).get("status") or {})


def test_a_policy_reports_its_own_health_and_how_many_keys_use_it(
    cluster: LocalCluster
) -> None:
    cluster.apply(policy("monthly", rotateEvery="30d", gracePeriod="1d"))
    for name in ("a", "b"):
        cluster.apply(apikey(name, rotationPolicyRef={"name": "monthly"}))
    good = cluster.wait_for(lambda: (s := policy_status(cluster, "monthly")).get("keys") == 2
                            and s, what="keys: 2 on the policy")
    ready = {c["type"]: c for c in good["conditions"]}["Ready"]
    assert ready["status"] == "True" and "rotates every 30d" in ready["message"]

    cluster.api.patch_object(POLICIES, None, "monthly", {"spec": {"gracePeriod": "40d"}})
    bad = cluster.wait_for(
        lambda: (s := policy_status(cluster, "monthly")) and
        {c["type"]: c for c in s.get("conditions", [])}["Ready"]["status"] == "False" and s,
        what="the policy not Ready")
    ready = {c["type"]: c for c in bad["conditions"]}["Ready"]
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"] == "spec.gracePeriod 40d is not shorter than spec.rotateEvery 30d"
    warnings = cluster.wait_for(
        lambda: [e for e in cluster.events("default", "monthly")
                 if e["reason"] == "InvalidSpec" and e["type"] == "Warning"
                 and e["involvedObject"]["kind"] == "RotationPolicy"],
        what="a Warning Event on the policy")
    assert warnings[0]["message"] == ready["message"]
    # `kubectl get rp` shows it: the printer columns are Ready and Keys.
    table = cluster.api.request("GET", "/apis/apikeys.dev/v1alpha1/rotationpolicies/monthly",
                                headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    columns = [c["name"] for c in table["columnDefinitions"]]
    cells = dict(zip(columns, table["rows"][0]["cells"], strict=True))
    assert cells["Ready"] == "False" and cells["Keys"] == 2

    cluster.api.delete_object(APIKEYS, "payments", "a")
    cluster.wait_for(lambda: policy_status(cluster, "monthly").get("keys") == 1,
                     what="keys: 1 after a key is deleted")


def test_a_key_whose_policy_does_not_exist_gets_a_warning_and_shows_unscheduled(
    cluster: LocalCluster
) -> None:
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "nope"}))
    cluster.wait_ready("payments", "billing")
    warning = cluster.wait_for(
        lambda: [e for e in cluster.events("payments", "billing")
                 if e["reason"] == "PolicyNotFound" and e["type"] == "Warning"],
        what="the PolicyNotFound Warning")
    assert "RotationPolicy nope not found" in warning[0]["message"]
    scheduled = cluster.condition("payments", "billing", "Scheduled")
    assert scheduled["status"] == "False" and scheduled["reason"] == "PolicyNotFound"
    assert status(cluster).get("nextRotationTime") is None


def test_a_moved_secret_takes_the_keys_and_the_old_one_is_removed(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    key = cluster.secret_data("payments", "billing")["api-key"]
    cluster.api.patch_object(APIKEYS, "payments", "billing",
                             {"spec": {"secret": {"name": "billing-v2"}}})
    cluster.wait_for(lambda: cluster.secret("payments", "billing") is None,
                     what="the old Secret removed")
    assert cluster.secret_data("payments", "billing-v2")["api-key"] == key
    cluster.wait_for(lambda: "SecretRemoved" in cluster.event_reasons("payments", "billing"),
                     what="the SecretRemoved Event")
    # Later rotations and revokes only ever touch the new Secret.
    cluster.annotate("payments", "billing", {"apikeys.dev/revoke": "after-move"})
    cluster.wait_for(lambda: cluster.secret_data("payments", "billing-v2")["api-key"] != key,
                     what="the revoke in the new Secret")
    assert cluster.secret("payments", "billing") is None


def test_after_a_restart_a_policy_is_written_once_with_every_key_counted(
    cluster: LocalCluster
) -> None:
    # The count is kept from the ApiKey events, not from a kopf index (an index over ApiKeys
    # makes a restart quadratic in the keys and deadlocks above kopf's worker limit): the
    # restarted operator must still wait for the listing instead of writing a partial count.
    cluster.apply(policy("monthly", rotateEvery="30d", gracePeriod="1d"))
    for i in range(40):
        cluster.apply(apikey(f"k{i:02d}", rotationPolicyRef={"name": "monthly"}))
    cluster.wait_for(lambda: policy_status(cluster, "monthly").get("keys") == 40, timeout=120,
                     what="keys: 40 on the policy")
    cluster.stop_operator_thread()
    cluster.apply(apikey("late", rotationPolicyRef={"name": "monthly"}))
    mark = cluster.api.traffic.mark()
    cluster.start_operator_thread()
    cluster.wait_ready("payments", "late", timeout=60)
    cluster.wait_for(lambda: policy_status(cluster, "monthly").get("keys") == 41, timeout=60,
                     what="keys: 41 after the restart")
    time.sleep(POLICY_STATUS_INTERVAL + 1)
    writes = [r for r in cluster.api.traffic.records(since=mark)
              if r.resource == "rotationpolicies" and r.verb in ("patch", "update")]
    assert len(writes) == 1, [f"{r.verb} {r.path}" for r in writes]
