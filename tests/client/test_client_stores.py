"""ApiKeyProvider with VaultSource and AwsSecretsManagerSource against real OpenBao and moto."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import boto3
import hvac
import pytest
from botocore.config import Config

from apikey_operator.client import (
    ApiKeyProvider,
    AwsSecretsManagerSource,
    KeySource,
    SourceUnavailable,
    VaultSource,
)
from apikey_operator.testing.servers import MotoServer, OpenBaoServer, TcpProxy, free_port

from .helpers import CountingSource, FakeClock, document, library_log

pytestmark = pytest.mark.integration


def new_key(tag: str) -> str:
    return f"test_{tag}_{uuid.uuid4().hex}"


def vault_client(address: str, token: str, timeout: float = 5) -> hvac.Client:
    return hvac.Client(url=address, token=token, timeout=timeout)


def aws_client(endpoint_url: str, timeout: float = 5) -> Any:
    return boto3.client(
        "secretsmanager",
        region_name="eu-west-1",
        endpoint_url=endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries={"max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout,
            read_timeout=timeout,
        ),
    )


class Store(Protocol):
    """One seeded store entry and a source reading it through a cuttable proxy."""

    name: str
    proxy: TcpProxy
    current: str

    def source(self, timeout: float = 5) -> KeySource: ...
    def rotate(self, key: str) -> None: ...
    def add_pending(self, key: str) -> None: ...


@dataclass
class VaultStore:
    server: OpenBaoServer
    proxy: TcpProxy
    current: str
    name: str = "vault"
    path: str = field(default_factory=lambda: f"apikeys/tests/{uuid.uuid4().hex[:12]}")
    versions: int = 0

    def __post_init__(self) -> None:
        self.admin = vault_client(self.server.address, self.server.token)
        self.rotate(self.current)

    def source(self, timeout: float = 5) -> KeySource:
        client = vault_client(self.proxy.address, self.server.token, timeout)
        return VaultSource(client=client, mount="secret", path=self.path)

    def _write(self, key: str) -> int:
        self.versions += 1
        self.admin.secrets.kv.v2.create_or_update_secret(
            path=self.path,
            secret={"key": key, "document": document(key, self.versions)},
            mount_point="secret",
        )
        return self.versions

    def _point(self, **pointers: int) -> None:
        custom = {"managed-by": "apikey-operator", **{k: str(v) for k, v in pointers.items()}}
        self.admin.secrets.kv.v2.update_metadata(
            path=self.path, custom_metadata=custom, mount_point="secret"
        )

    def rotate(self, key: str) -> None:
        previous = self.versions
        version = self._write(key)
        self._point(current=version, **({"previous": previous} if previous else {}))

    def add_pending(self, key: str) -> None:
        current = self.versions
        pending = self._write(key)
        self._point(current=current, pending=pending)


@dataclass
class AwsStore:
    server: MotoServer
    proxy: TcpProxy
    current: str
    name: str = "aws"
    secret_id: str = field(default_factory=lambda: f"apikeys/tests/{uuid.uuid4().hex[:12]}")

    def __post_init__(self) -> None:
        self.admin = aws_client(self.server.endpoint_url)
        self.admin.create_secret(
            Name=self.secret_id,
            SecretString=json.dumps({"key": self.current, "document": document(self.current, 1)}),
            Tags=[{"Key": "managed-by", "Value": "apikey-operator"}],
        )

    def source(self, timeout: float = 5) -> KeySource:
        client = aws_client(self.proxy.address, timeout)
        return AwsSecretsManagerSource(client=client, secret_id=self.secret_id)

    def _current_version(self) -> str:
        listed = self.admin.describe_secret(SecretId=self.secret_id)["VersionIdsToStages"]
        return next(v for v, stages in listed.items() if "AWSCURRENT" in stages)

    def add_pending(self, key: str) -> None:
        self.admin.put_secret_value(
            SecretId=self.secret_id,
            ClientRequestToken=str(uuid.uuid4()),
            SecretString=json.dumps({"key": key, "document": document(key, 0)}),
            VersionStages=["AWSPENDING"],
        )

    def rotate(self, key: str, finish: bool = True) -> None:
        """Promote a new version like the operator; without `finish`, stop after moving
        AWSCURRENT (a promotion interrupted before AWSPENDING is removed)."""
        token = str(uuid.uuid4())
        self.admin.put_secret_value(
            SecretId=self.secret_id,
            ClientRequestToken=token,
            SecretString=json.dumps({"key": key, "document": document(key, 0)}),
            VersionStages=["AWSPENDING"],
        )
        self.admin.update_secret_version_stage(
            SecretId=self.secret_id,
            VersionStage="AWSCURRENT",
            MoveToVersionId=token,
            RemoveFromVersionId=self._current_version(),
        )
        if finish:
            self.admin.update_secret_version_stage(
                SecretId=self.secret_id, VersionStage="AWSPENDING", RemoveFromVersionId=token
            )


@pytest.fixture(params=["vault", "aws"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    key = new_key("initial")
    if request.param == "vault":
        proxy = request.getfixturevalue("openbao_proxy")
        yield VaultStore(request.getfixturevalue("openbao"), proxy, key)
    else:
        proxy = request.getfixturevalue("moto_proxy")
        yield AwsStore(request.getfixturevalue("moto"), proxy, key)


def counted(store: Store, **kwargs: Any) -> tuple[ApiKeyProvider, CountingSource, FakeClock]:
    counting = CountingSource(store.source())
    clock = FakeClock()
    return ApiKeyProvider(counting, clock=clock, **kwargs), counting, clock


def test_the_current_key_is_read(store: Store) -> None:
    assert store.source().read() == store.current


def test_cache_hits_make_no_store_calls(store: Store) -> None:
    provider, counting, clock = counted(store, ttl=900)
    for _ in range(20):
        assert provider.get() == store.current
        clock.advance(30)
    assert counting.calls == 1


def test_an_expired_ttl_picks_up_a_rotation(store: Store) -> None:
    provider, counting, clock = counted(store, ttl=900)
    old = provider.get()
    rotated = new_key("rotated")
    store.rotate(rotated)
    clock.advance(899)
    assert provider.get() == old
    clock.advance(1)
    assert provider.get() == rotated
    assert counting.calls == 2


def test_a_pending_key_is_never_returned(store: Store) -> None:
    store.add_pending(new_key("pending"))
    assert store.source().read() == store.current


def test_fifty_concurrent_gets_make_one_store_call(store: Store) -> None:
    provider, counting, _ = counted(store)
    start = threading.Barrier(50)

    def call() -> str:
        start.wait(timeout=10)
        return provider.get()

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: call(), range(50)))
    assert results == [store.current] * 50
    assert counting.calls == 1


async def test_fifty_concurrent_agets_make_one_store_call(store: Store) -> None:
    provider, counting, _ = counted(store)
    results = await asyncio.gather(*(provider.aget() for _ in range(50)))
    assert results == [store.current] * 50
    assert counting.calls == 1


def test_an_unreachable_store_with_an_empty_cache_fails_closed(store: Store) -> None:
    provider, counting, _ = counted(store)
    with (
        store.proxy.outage("refuse"),
        pytest.raises(SourceUnavailable, match="cannot connect") as info,
    ):
        provider.get()
    assert counting.inner.description in str(info.value)
    assert store.current not in str(info.value)


def test_a_store_that_stops_answering_times_out_into_unavailable(store: Store) -> None:
    provider = ApiKeyProvider(store.source(timeout=0.5))
    with store.proxy.outage("hang"), pytest.raises(SourceUnavailable, match="timed out"):
        provider.get()


def test_a_warm_cache_serves_stale_then_fails_after_max_stale(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    provider, _, clock = counted(store, ttl=60, on_error="serve-stale", max_stale=600)
    key = provider.get()
    with store.proxy.outage("refuse"):
        clock.advance(61)
        with caplog.at_level(logging.WARNING, logger="apikey_operator.client"):
            assert provider.get() == key
        assert "stale" in library_log(caplog)
        assert key not in library_log(caplog)
        clock.advance(600)
        with pytest.raises(SourceUnavailable, match="max_stale") as info:
            provider.get()
        assert key not in str(info.value)
    # Once the store is back the provider recovers by itself.
    clock.advance(2)
    assert provider.get() == key


def test_fail_mode_does_not_serve_an_expired_key(store: Store) -> None:
    provider, _, clock = counted(store, ttl=60)
    provider.get()
    with store.proxy.outage("refuse"):
        clock.advance(61)
        with pytest.raises(SourceUnavailable):
            provider.get()


def test_a_missing_entry_is_unavailable(openbao: OpenBaoServer, moto: MotoServer) -> None:
    sources: list[KeySource] = [
        VaultSource(client=vault_client(openbao.address, openbao.token), path="apikeys/no/such"),
        AwsSecretsManagerSource(client=aws_client(moto.endpoint_url), secret_id="apikeys/no/such"),
    ]
    for source in sources:
        with pytest.raises(SourceUnavailable, match=r"does not exist|ResourceNotFound"):
            ApiKeyProvider(source).get()


def test_a_dead_port_is_unavailable() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sources: list[KeySource] = [
        VaultSource(client=vault_client(dead, "root"), path="apikeys/ns/name"),
        AwsSecretsManagerSource(client=aws_client(dead), secret_id="apikeys/ns/name"),
    ]
    for source in sources:
        with pytest.raises(SourceUnavailable, match="cannot connect"):
            ApiKeyProvider(source).get()


def test_a_sealed_vault_is_unavailable(openbao: OpenBaoServer, openbao_proxy: TcpProxy) -> None:
    store = VaultStore(openbao, openbao_proxy, new_key("sealed"))
    source = store.source()
    openbao.seal()
    try:
        with pytest.raises(SourceUnavailable, match="sealed"):
            source.read()
    finally:
        openbao.unseal()
    assert source.read() == store.current


def test_a_vault_entry_without_a_current_pointer_is_unavailable(
    openbao: OpenBaoServer, openbao_proxy: TcpProxy
) -> None:
    store = VaultStore(openbao, openbao_proxy, new_key("nopointer"))
    store._point()
    with pytest.raises(SourceUnavailable, match="no current key version"):
        store.source().read()


def test_a_destroyed_current_version_is_unavailable(
    openbao: OpenBaoServer, openbao_proxy: TcpProxy
) -> None:
    store = VaultStore(openbao, openbao_proxy, new_key("destroyed"))
    store.admin.secrets.kv.v2.destroy_secret_versions(
        path=store.path, versions=[1], mount_point="secret"
    )
    with pytest.raises(SourceUnavailable) as info:
        store.source().read()
    assert store.current not in str(info.value)


def test_an_aws_secret_that_is_not_the_operators_document_is_unavailable(moto: MotoServer) -> None:
    admin = aws_client(moto.endpoint_url)
    secret_id = f"apikeys/tests/{uuid.uuid4().hex[:12]}"
    admin.create_secret(Name=secret_id, SecretString="plain-text-not-json")
    with pytest.raises(SourceUnavailable, match="JSON document") as info:
        AwsSecretsManagerSource(client=admin, secret_id=secret_id).read()
    assert "plain-text" not in str(info.value)


def test_an_interrupted_aws_promotion_still_serves_the_old_current_key(
    moto: MotoServer, moto_proxy: TcpProxy
) -> None:
    store = AwsStore(moto, moto_proxy, new_key("old"))
    store.rotate(new_key("new"), finish=False)
    # The operator counts the old version (now AWSPREVIOUS) as current until it finishes.
    assert store.source().read() == store.current
