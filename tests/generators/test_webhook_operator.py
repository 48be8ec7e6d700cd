"""The real operator on the emulated API minting and revoking keys at the fake vendor."""

from __future__ import annotations

import json

import pytest

from apikey_operator import keys
from apikey_operator.testing.harness import APIKEYS, LocalCluster
from apikey_operator.testing.vendor import FakeVendor
from tests.generators.helpers import SCOPES, current, uid, vendor_apikey, version
from tests.integration.helpers import policy, store_valid_keys

pytestmark = pytest.mark.integration

ROTATE = "apikeys.dev/rotate"
REVOKE = "apikeys.dev/revoke"


def vendor_key(vendor: FakeVendor, key: str) -> str:
    """The vendor's id for a key it minted (fails the test for a key it did not mint)."""
    minted = vendor.key_by_value(key)
    assert minted is not None, "the key in the Secret was not minted by the vendor"
    return minted.id


def test_provisioning_mints_the_key_at_the_vendor(cluster: LocalCluster,
                                                  vendor: FakeVendor) -> None:
    cluster.apply(vendor_apikey("billing"))
    body = cluster.wait_ready("payments", "billing")
    key = current(cluster)
    minted = vendor.key_by_value(key)
    assert minted is not None and not minted.revoked
    assert (minted.namespace, minted.name, minted.version) == ("payments", "billing", 1)
    assert keys.matches_format(key, keys.KeyFormat(32, "base62", "bill_"))
    [call] = vendor.calls_of("POST")
    assert (call.path, call.status, call.authorized) == ("/keys", 201, True)
    assert call.idempotency_key == f"{uid(cluster)}-1"
    assert call.body == {"namespace": "payments", "name": "billing", "uid": uid(cluster),
                         "version": 1, "scopes": SCOPES,
                         "format": {"length": 32, "encoding": "base62", "prefix": "bill_"}}
    assert {"authorization", "idempotency-key", "content-type"} <= call.headers
    assert body["status"]["currentKey"]["fingerprint"] == keys.fingerprint(key)
    # The vendor's id is kept with the version, so a revoke after a restart still finds it.
    stored = cluster.secret_data("apikey-operator", "ak.payments.billing")
    assert json.loads(stored["v1"])["externalId"] == minted.id
    assert vendor.calls_of("DELETE") == []


def test_rotate_mints_anew_and_revoke_revokes_at_the_vendor_at_once(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    cluster.apply(vendor_apikey("billing"))
    cluster.wait_ready("payments", "billing")
    first = current(cluster)
    cluster.annotate("payments", "billing", {ROTATE: "r1"})
    cluster.wait_for(lambda: version(cluster) == 2, what="version 2")
    data = cluster.secret_data("payments", "billing")
    second = data["api-key"]
    assert data["api-key-previous"] == first
    assert [c.idempotency_key for c in vendor.calls_of("POST")] == [
        f"{uid(cluster)}-1", f"{uid(cluster)}-2"]
    # Without a policy the grace is 24h: the old key stays valid at the vendor too.
    assert vendor.calls_of("DELETE") == []
    first_id, second_id = vendor_key(vendor, first), vendor_key(vendor, second)

    cluster.annotate("payments", "billing", {REVOKE: "incident-7"})
    cluster.wait_for(lambda: set(cluster.secret_data("payments", "billing")) == {"api-key"}
                     and current(cluster) not in (first, second), what="the revoke")
    revoked = {first_id, second_id}
    vendor.wait_for(lambda: {k.id for k in vendor.minted() if k.revoked} == revoked,
                    what="both old keys revoked at the vendor")
    assert [k.key for k in vendor.active()] == [current(cluster)]
    deletes = vendor.calls_of("DELETE")
    assert sorted(c.path for c in deletes) == sorted(f"/keys/{i}" for i in revoked)
    assert all(c.status == 204 and c.authorized for c in deletes)
    # The vendor is told first; the store drops the version right after.
    cluster.wait_for(lambda: set(store_valid_keys(cluster, "payments", "billing").values())
                     == {current(cluster)}, what="the store to keep only the new key")
    cluster.wait_for(lambda: "Revoked" in cluster.event_reasons("payments", "billing"),
                     what="the Revoked event")


def test_a_policy_rotation_revokes_the_old_key_at_the_vendor_after_the_grace(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    cluster.apply(policy("fast", rotateEvery="10s", gracePeriod="3s"))
    cluster.apply(vendor_apikey("billing", rotationPolicyRef={"name": "fast"}))
    cluster.wait_ready("payments", "billing")
    first = current(cluster)
    first_id = vendor_key(vendor, first)
    cluster.wait_for(lambda: current(cluster) != first, timeout=20, what="the rotation")
    second_id = vendor_key(vendor, current(cluster))
    cluster.wait_for(lambda: "api-key-previous" not in cluster.secret_data("payments",
                                                                           "billing"),
                     timeout=10, what="the grace to end")
    vendor.wait_for(lambda: vendor.keys[first_id].revoked, what="the old key revoked")
    calls = [(c.method, c.key_id) for c in vendor.calls]
    # Minted the new key first, revoked the old one only afterwards, exactly once.
    assert calls.index(("POST", second_id)) < calls.index(("DELETE", first_id))
    assert calls.count(("DELETE", first_id)) == 1
    assert not vendor.keys[second_id].revoked


def test_a_5xx_mint_is_retried_with_the_same_idempotency_key(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    vendor.fail_next(2, 503, method="POST")
    cluster.apply(vendor_apikey("billing"))
    cluster.wait_ready("payments", "billing")
    posts = vendor.calls_of("POST")
    assert [c.status for c in posts] == [503, 503, 201]
    assert {c.idempotency_key for c in posts} == {f"{uid(cluster)}-1"}
    assert [k.key for k in vendor.minted()] == [current(cluster)]
    assert "RotationFailed" not in cluster.event_reasons("payments", "billing")


def test_a_mint_whose_answer_was_lost_is_not_minted_twice(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    vendor.lose_next_mint_answers(1)
    cluster.apply(vendor_apikey("billing"))
    cluster.wait_ready("payments", "billing")
    assert [c.status for c in vendor.calls_of("POST")] == [502, 200]
    assert [k.key for k in vendor.minted()] == [current(cluster)]


def test_a_vendor_that_refuses_leaves_the_current_key_and_revokes_nothing(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    cluster.apply(vendor_apikey("billing"))
    cluster.wait_ready("payments", "billing")
    first = current(cluster)
    vendor.refuse(403, method="POST")
    cluster.annotate("payments", "billing", {ROTATE: "r1"})
    cond = cluster.wait_reason("payments", "billing", "RotationFailed")
    assert cond["status"] == "False" and "403" in cond["message"]
    cluster.wait_for(lambda: [e for e in cluster.events("payments", "billing")
                              if e.get("reason") == "RotationFailed"
                              and e.get("type") == "Warning"], what="a Warning event")
    assert cluster.secret_data("payments", "billing") == {"api-key": first}
    assert version(cluster) == 1
    assert vendor.calls_of("DELETE") == []
    assert [k.key for k in vendor.active()] == [first]
    assert set(store_valid_keys(cluster, "payments", "billing").values()) == {first}


def test_a_vendor_outage_fails_the_rotation_then_it_completes_when_the_vendor_is_back(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    cluster.apply(vendor_apikey("billing"))
    cluster.wait_ready("payments", "billing")
    first = current(cluster)
    vendor.fail_next(3, 503, method="POST")  # one reconcile's worth: maxRetries is 2
    cluster.annotate("payments", "billing", {ROTATE: "r1"})
    cluster.wait_for(lambda: version(cluster) == 2, what="the rotation after the outage")
    assert "RotationFailed" in cluster.event_reasons("payments", "billing")
    posts = vendor.calls_of("POST")
    assert [c.status for c in posts] == [201, 503, 503, 503, 201]
    assert {c.idempotency_key for c in posts[1:]} == {f"{uid(cluster)}-2"}
    # No revoke happened while the new key was missing; the old key is the grace key now.
    assert vendor.calls_of("DELETE") == []
    assert cluster.secret_data("payments", "billing")["api-key-previous"] == first
    cluster.wait_ready("payments", "billing")


def test_deleting_the_apikey_revokes_every_version_at_the_vendor(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    cluster.apply(vendor_apikey("billing"))
    cluster.wait_ready("payments", "billing")
    cluster.annotate("payments", "billing", {ROTATE: "r1"})
    cluster.wait_for(lambda: version(cluster) == 2, what="version 2")
    ids = {k.id for k in vendor.minted()}
    assert len(ids) == 2
    cluster.api.delete_object(APIKEYS, "payments", "billing")
    cluster.wait_for(lambda: cluster.apikey("payments", "billing") is None, what="deletion")
    assert vendor.active() == []
    assert {c.key_id for c in vendor.calls_of("DELETE")} == ids


def test_a_revoke_the_vendor_cannot_do_yet_is_retried_until_it_is_done(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    cluster.apply(vendor_apikey("billing"))
    cluster.wait_ready("payments", "billing")
    first = current(cluster)
    first_id = vendor_key(vendor, first)
    vendor.refuse(503, method="DELETE")
    cluster.annotate("payments", "billing", {REVOKE: "incident-9"})
    cond = cluster.wait_reason("payments", "billing", "RotationFailed")
    assert "DELETE /keys/{id}: 503 Service Unavailable" in cond["message"]
    assert not vendor.keys[first_id].revoked
    # The store keeps the version, and with it the vendor's id, until the vendor revoked it.
    assert first in store_valid_keys(cluster, "payments", "billing").values()
    vendor.stop_refusing()
    vendor.wait_for(lambda: vendor.keys[first_id].revoked, timeout=30,
                    what="the revoke to go through")
    cluster.wait_for(lambda: set(store_valid_keys(cluster, "payments", "billing").values())
                     == {current(cluster)} and current(cluster) != first,
                     what="only the new key left")
    assert [k.key for k in vendor.active()] == [current(cluster)]
    cluster.wait_ready("payments", "billing")
