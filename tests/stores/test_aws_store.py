"""What the AWS Secrets Manager store leaves in moto after each step, and its edge cases."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from apikey_operator.client import AwsSecretsManagerSource
from apikey_operator.stores.aws import AwsSecretsManagerStore, version_id
from apikey_operator.stores.base import StoreError, StoreUnavailable, VersionDocument
from apikey_operator.testing.servers import free_port
from tests.stores.conftest import GRACE_END, new_doc, new_ref
from tests.support.store_backends import AwsBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"


async def test_each_step_leaves_the_documented_staging_labels(
    store_backend_aws: AwsBackend,
) -> None:
    backend = store_backend_aws
    store, ref = backend.make_store(), new_ref("payments", "billing")
    name = backend.secret_name(ref)
    assert name == f"{backend.name_prefix}payments/billing"
    v1, v2 = version_id(ref.uid, 1), version_id(ref.uid, 2)

    first = await store.write_pending(ref, new_doc(1))
    # AWS makes a secret's very first version current by itself.
    assert backend.stages(ref) == {v1: [CURRENT, PENDING]}
    await store.promote(ref, first.version, GRACE_END)
    assert backend.stages(ref) == {v1: [CURRENT]}

    second = await store.write_pending(ref, new_doc(2, handles={"rotate": "r-1"}))
    assert backend.stages(ref) == {v1: [CURRENT], v2: [PENDING]}
    await store.promote(ref, second.version, GRACE_END)
    assert backend.stages(ref) == {v1: [PREVIOUS], v2: [CURRENT]}

    await store.revoke(ref, first.version)
    assert backend.stages(ref) == {v1: [], v2: [CURRENT]}
    client = backend.client()
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_secret_value(SecretId=name, VersionStage=PREVIOUS)


async def test_versions_and_tags_hold_the_documented_content(
    store_backend_aws: AwsBackend,
) -> None:
    backend = store_backend_aws
    store, ref = backend.make_store(), new_ref("payments", "billing")
    first = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    await store.write_pending(ref, new_doc(2, handles={"rotate": "weird token!"}))
    await store.promote(ref, 2, GRACE_END)
    client, name = backend.client(), backend.secret_name(ref)

    value = json.loads(
        client.get_secret_value(SecretId=name, VersionId=version_id(ref.uid, 1))["SecretString"]
    )
    described = client.describe_secret(SecretId=name)

    assert value["key"] == first.key
    assert VersionDocument.from_json(value["document"]) == first
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["managed-by"] == "apikey-operator"
    assert tags["apikeys.dev/owner-uid"] == ref.uid
    assert (tags["apikeys.dev/namespace"], tags["apikeys.dev/name"]) == ("payments", "billing")
    assert tags["apikeys.dev/previous-valid-until"] == "2026-01-03T03:04:05Z"
    assert tags["apikeys.dev/handled-rotate"].startswith("b64:")
    assert (await store.read(ref)).handled == {"rotate": "weird token!"}
    assert "invoices:read" in described["Description"]

    await store.revoke(ref, 1)
    keys = {t["Key"] for t in client.describe_secret(SecretId=name)["Tags"]}
    assert "apikeys.dev/previous-valid-until" not in keys


async def test_the_description_follows_the_scopes_of_the_current_key(
    store_backend_aws: AwsBackend,
) -> None:
    backend = store_backend_aws
    store, ref = backend.make_store(), new_ref()
    await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    await store.write_pending(ref, new_doc(2, scopes=("reports:write",)))
    await store.promote(ref, 2, GRACE_END)

    described = backend.client().describe_secret(SecretId=backend.secret_name(ref))

    assert described["Description"].endswith("scopes: reports:write")
    assert sorted(backend.stages(ref).values()) == [[CURRENT], [PREVIOUS]]


async def test_the_consumer_library_reads_the_current_key(store_backend_aws: AwsBackend) -> None:
    backend = store_backend_aws
    store, ref = backend.make_store(), new_ref()
    first = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    pending = await store.write_pending(ref, new_doc(2))
    source = AwsSecretsManagerSource(client=backend.client(), secret_id=backend.secret_name(ref))

    assert source.read() == first.key  # never the pending key

    await store.promote(ref, pending.version, GRACE_END)
    assert source.read() == pending.key


async def test_an_interrupted_promotion_reads_as_pending_and_finishes(
    store_backend_aws: AwsBackend,
) -> None:
    backend = store_backend_aws
    store, ref = backend.make_store(), new_ref()
    first = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    second = await store.write_pending(ref, new_doc(2))
    # The crash: tags written, AWSCURRENT moved, AWSPENDING not yet removed.
    client, name = backend.client(), backend.secret_name(ref)
    client.tag_resource(SecretId=name, Tags=[
        {"Key": "apikeys.dev/previous-valid-until", "Value": "2026-01-03T03:04:05Z"}])
    client.update_secret_version_stage(
        SecretId=name, VersionStage=CURRENT, MoveToVersionId=version_id(ref.uid, 2),
        RemoveFromVersionId=version_id(ref.uid, 1),
    )

    state = await store.read(ref)
    assert (state.current, state.pending, state.previous) == (first, second, None)

    await store.promote(ref, second.version, GRACE_END)

    state = await store.read(ref)
    assert (state.current, state.previous, state.pending) == (second, first, None)
    assert state.previous_valid_until == GRACE_END
    assert backend.stages(ref) == {version_id(ref.uid, 1): [PREVIOUS],
                                   version_id(ref.uid, 2): [CURRENT]}


async def test_a_revoked_pending_version_id_is_never_reused(store_backend_aws: AwsBackend) -> None:
    backend = store_backend_aws
    store, ref = backend.make_store(), new_ref()
    await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    revoked = await store.write_pending(ref, new_doc(2))
    await store.revoke(ref, revoked.version)

    replacement = await store.write_pending(ref, new_doc(2))

    assert replacement.version == 3
    assert backend.stages(ref)[version_id(ref.uid, 3)] == [PENDING]
    assert backend.stages(ref)[version_id(ref.uid, 2)] == []


async def test_version_ids_hidden_from_describe_are_not_reused(
    store_backend_aws: AwsBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real AWS leaves unlabelled versions out of describe_secret (moto lists them).
    store = store_backend_aws.make_store()
    assert isinstance(store, AwsSecretsManagerStore)
    describe = store._describe

    def like_aws(name: str, deadline: Any) -> Any:
        secret = describe(name, deadline)
        if secret is None:
            return None
        labelled = {vid: labels for vid, labels in secret.stages.items() if labels}
        return dataclasses.replace(secret, stages=labelled)

    monkeypatch.setattr(store, "_describe", like_aws)
    ref = new_ref()
    await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    revoked = await store.write_pending(ref, new_doc(2))
    await store.revoke(ref, revoked.version)

    replacement = await store.write_pending(ref, new_doc(2))

    assert replacement.version == 3
    assert (await store.read(ref)).pending == replacement


async def test_the_current_version_cannot_be_revoked(store_backend_aws: AwsBackend) -> None:
    store, ref = store_backend_aws.make_store(), new_ref()
    await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)

    with pytest.raises(StoreError, match="AWSCURRENT"):
        await store.revoke(ref, 1)
    assert (await store.read(ref)).current is not None


async def test_a_kms_key_is_used_for_new_secrets(store_backend_aws: AwsBackend) -> None:
    backend = store_backend_aws
    store, ref = backend.make_store(kmsKeyId="alias/apikeys"), new_ref()

    await store.write_pending(ref, new_doc(1))

    described = backend.client().describe_secret(SecretId=backend.secret_name(ref))
    assert described["KmsKeyId"] == "alias/apikeys"


async def test_a_dead_endpoint_is_unavailable(store_backend_aws: AwsBackend) -> None:
    store = store_backend_aws.make_store(endpointUrl=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await store.read(new_ref())


async def test_a_secret_scheduled_for_deletion_is_unavailable(
    store_backend_aws: AwsBackend,
) -> None:
    backend = store_backend_aws
    store, ref = backend.make_store(), new_ref()
    await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    backend.client().delete_secret(SecretId=backend.secret_name(ref), RecoveryWindowInDays=7)

    with pytest.raises(StoreUnavailable, match="deletion"):
        await store.read(ref)


def test_the_store_is_built_from_the_registry(store_backend_aws: AwsBackend) -> None:
    store = store_backend_aws.make_store()
    assert isinstance(store, AwsSecretsManagerStore)
    assert store.type_name == "aws-secrets-manager"
    location = store.location(new_ref("a", "b"))
    assert location.startswith("aws:apikeys/") and location.endswith("/a/b?region=us-east-1")
