"""The client sources read exactly what the operator's own stores write.

Drives the real VaultStore and AwsSecretsManagerStore through a rotation (create
pending, promote, expire) against real OpenBao and moto, and checks at every step
that the consumer sources return the current key, never the pending one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import hvac
import pytest
from botocore.config import Config

from apikey_operator.client import (
    AwsSecretsManagerSource,
    KeySource,
    SourceUnavailable,
    VaultSource,
)
from apikey_operator.keys import KeyFormat, generate
from apikey_operator.stores import factory_for
from apikey_operator.stores.base import KeyRef, Store, VersionDocument
from apikey_operator.testing.servers import MotoServer, OpenBaoServer

pytestmark = pytest.mark.integration

FORMAT = KeyFormat(prefix="bill_")
REGION = "eu-west-1"

# (store, source for a ref) for one backend.
Backend = tuple[Store, Callable[[KeyRef], KeySource]]


@pytest.fixture(params=["vault", "aws"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Backend]:
    if request.param == "vault":
        openbao: OpenBaoServer = request.getfixturevalue("openbao")
        token_file = openbao.write_token_file(tmp_path / "token")
        store = factory_for("vault")(
            "vault",
            {"address": openbao.address, "auth": {"method": "token", "tokenFile": str(token_file)}},
            "apikey-operator",
        )
        client = hvac.Client(url=openbao.address, token=openbao.token, timeout=5)

        def vault_source(ref: KeyRef) -> KeySource:
            return VaultSource(
                client=client, mount="secret", path=f"apikeys/{ref.namespace}/{ref.name}"
            )

        yield store, vault_source
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.setenv(name, "testing")
        store = factory_for("aws-secrets-manager")(
            "aws", {"region": REGION, "endpointUrl": moto.endpoint_url}, "apikey-operator"
        )
        sm: Any = boto3.client(
            "secretsmanager",
            region_name=REGION,
            endpoint_url=moto.endpoint_url,
            config=Config(retries={"max_attempts": 1}),
        )

        def aws_source(ref: KeyRef) -> KeySource:
            return AwsSecretsManagerSource(
                client=sm, secret_id=f"apikeys/{ref.namespace}/{ref.name}"
            )

        yield store, aws_source
    await store.close()


def document(version: int) -> VersionDocument:
    return VersionDocument(
        version=version, key=generate(FORMAT), created_at=datetime.now(UTC), key_format=FORMAT
    )


async def test_a_rotation_written_by_the_store_is_read_by_the_source(backend: Backend) -> None:
    store, source_for = backend
    ref = KeyRef("contract", f"key-{uuid.uuid4().hex[:8]}", str(uuid.uuid4()))
    source = source_for(ref)
    with pytest.raises(SourceUnavailable):
        source.read()

    first = await store.write_pending(ref, document(1))
    # Pending only: nothing is current yet, so consumers must not get the key.
    with pytest.raises(SourceUnavailable) as info:
        source.read()
    assert first.key not in str(info.value)
    await store.promote(ref, first.version, datetime.now(UTC) + timedelta(hours=1))
    assert source.read() == first.key

    second = await store.write_pending(ref, document(first.version + 1))
    assert source.read() == first.key  # the pending key is not handed out
    await store.promote(ref, second.version, datetime.now(UTC) + timedelta(hours=1))
    assert source.read() == second.key

    await store.revoke(ref, first.version)  # the grace ends
    assert source.read() == second.key

    await store.delete(ref)
    with pytest.raises(SourceUnavailable):
        source.read()
