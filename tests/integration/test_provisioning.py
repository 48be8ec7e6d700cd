"""The first vertical slice: the real operator provisions ApiKeys on the emulated API."""

from __future__ import annotations

import pytest
import yaml

from apikey_operator import keys
from apikey_operator.testing.harness import APIKEYS, SECRETS, LocalCluster, default_crd_dir
from apikey_operator.testing.kubeapi import KubernetesApiError
from tests.integration.helpers import apikey, store_valid_keys

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("key_spec", "fmt"), [
    ({}, keys.KeyFormat(32, "base62", "")),
    ({"encoding": "base62", "prefix": "bill_", "length": 48},
     keys.KeyFormat(48, "base62", "bill_")),
    ({"encoding": "base64url", "length": 16}, keys.KeyFormat(16, "base64url", "")),
    ({"encoding": "hex", "prefix": "hx_", "length": 128}, keys.KeyFormat(128, "hex", "hx_")),
], ids=["base62 default", "base62 with prefix", "base64url", "hex with prefix"])
def test_each_encoding_is_provisioned_in_the_exact_format(
    cluster: LocalCluster, key_spec: dict[str, object], fmt: keys.KeyFormat
) -> None:
    cluster.apply(apikey("billing", key=key_spec, scopes=["invoices:read"],
                         secret={"name": "billing-key"}))
    body = cluster.wait_ready("payments", "billing")
    data = cluster.secret_data("payments", "billing-key")
    key = data["api-key"]
    assert keys.matches_format(key, fmt)
    assert set(data) == {"api-key"}
    status = body["status"]
    assert status["currentKey"]["fingerprint"] == keys.fingerprint(key)
    assert status["currentKey"]["version"] == 1
    assert status["storeRef"] == "kubernetes:apikey-operator/ak.payments.billing"
    assert status["observedGeneration"] == body["metadata"]["generation"]
    secret = cluster.secret("payments", "billing-key")
    assert secret is not None
    meta = secret["metadata"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "apikey-operator"
    assert meta["ownerReferences"] == [{
        "apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey", "name": "billing",
        "uid": body["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    assert meta["annotations"]["apikeys.dev/fingerprint"] == keys.fingerprint(key)
    assert meta["annotations"]["apikeys.dev/version"] == "1"
    assert meta["annotations"]["apikeys.dev/scopes"] == "invoices:read"
    assert secret["type"] == "Opaque"
    assert store_valid_keys(cluster, "payments", "billing") == {1: key}
    assert key in cluster.recorder.keys, "the leak scan must know every generated key"
    cluster.wait_for(lambda: "Provisioned" in cluster.event_reasons("payments", "billing"),
                     what="the Provisioned event")


@pytest.mark.parametrize("bad_key", [
    {"length": 8}, {"encoding": "rot13"}, {"prefix": "Bad-Prefix"},
], ids=["length 8", "encoding rot13", "bad prefix"])
def test_the_schema_rejects_invalid_specs_and_nothing_is_created(
    cluster: LocalCluster, bad_key: dict[str, object]
) -> None:
    with pytest.raises(KubernetesApiError) as info:
        cluster.apply(apikey("bad", key=bad_key))
    assert info.value.status == 422
    assert "spec.key" in info.value.message
    assert cluster.apikey("payments", "bad") is None
    assert cluster.secret("payments", "bad") is None


def test_a_secret_the_operator_does_not_own_is_left_untouched(cluster: LocalCluster) -> None:
    foreign = cluster.api.create_object({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "taken", "namespace": "payments"},
        "data": {"api-key": "c29tZW9uZSBlbHNlJ3M="}})
    cluster.apply(apikey("billing", secret={"name": "taken"}))
    cond = cluster.wait_reason("payments", "billing", "SecretConflict")
    assert cond["status"] == "False" and "taken" in cond["message"]
    after = cluster.secret("payments", "taken")
    assert after is not None
    assert after["data"] == foreign["data"]
    assert after["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"]
    cluster.wait_for(lambda: "SecretConflict" in cluster.event_reasons("payments", "billing"),
                     what="the SecretConflict event")


def test_two_apikeys_targeting_one_secret_never_share_it(cluster: LocalCluster) -> None:
    cluster.apply(apikey("first", secret={"name": "shared"}))
    first = cluster.wait_ready("payments", "first")
    cluster.apply(apikey("second", secret={"name": "shared"}))
    cluster.wait_reason("payments", "second", "SecretConflict")
    data = cluster.secret_data("payments", "shared")
    assert keys.fingerprint(data["api-key"]) == first["status"]["currentKey"]["fingerprint"]


def test_an_unknown_store_stalls_the_key_and_others_are_still_served(
    cluster: LocalCluster
) -> None:
    cluster.apply(apikey("broken", store="nowhere"))
    cluster.apply(apikey("fine"))
    cluster.wait_ready("payments", "fine")
    stalled = cluster.wait_reason("payments", "broken", "InvalidSpec", type_="Stalled")
    assert stalled["status"] == "True"
    assert "spec.store 'nowhere' is not a configured store" in stalled["message"]
    ready = cluster.condition("payments", "broken")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    cluster.wait_for(lambda: "InvalidSpec" in cluster.event_reasons("payments", "broken"),
                     what="the InvalidSpec event")
    assert cluster.secret("payments", "broken") is None


def test_an_object_that_skipped_schema_validation_is_still_validated(
    cluster: LocalCluster
) -> None:
    """An older CRD or a lenient server can let a bad spec through: the operator checks too."""
    crd = yaml.safe_load((default_crd_dir() / "apikeys.dev_apikeys.yaml").read_text())
    for version in crd["spec"]["versions"]:
        version["schema"]["openAPIV3Schema"] = {
            "type": "object", "x-kubernetes-preserve-unknown-fields": True}
    cluster.install_crd(crd)
    created = cluster.apply(apikey("lenient", key={"length": 4096, "encoding": "rot13"}))
    assert created["spec"]["key"]["length"] == 4096
    cond = cluster.wait_reason("payments", "lenient", "InvalidSpec")
    assert "spec.key.length 4096 is out of range 16..128" in cond["message"]
    cluster.apply(apikey("fine-meanwhile"))
    cluster.wait_ready("payments", "fine-meanwhile")
    assert cluster.secret("payments", "lenient") is None


def test_deleting_an_apikey_deletes_its_secret_and_store_entry(cluster: LocalCluster) -> None:
    cluster.apply(apikey("gone"))
    cluster.wait_ready("payments", "gone")
    cluster.api.delete_object(APIKEYS, "payments", "gone")
    cluster.wait_for(lambda: cluster.apikey("payments", "gone") is None, what="deletion")
    cluster.wait_for(lambda: cluster.secret("payments", "gone") is None, what="GC of the Secret")
    assert cluster.api.get_object(SECRETS, "apikey-operator", "ak.payments.gone") is None


def test_retain_keeps_the_store_entry(cluster: LocalCluster) -> None:
    cluster.apply(apikey("kept", deletionPolicy="Retain"))
    cluster.wait_ready("payments", "kept")
    cluster.api.delete_object(APIKEYS, "payments", "kept")
    cluster.wait_for(lambda: cluster.apikey("payments", "kept") is None, what="deletion")
    assert cluster.api.get_object(SECRETS, "apikey-operator", "ak.payments.kept") is not None
