"""What the Vault store leaves in OpenBao after each step, its auth methods and its outages."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from apikey_operator.client import VaultSource
from apikey_operator.stores import factory_for
from apikey_operator.stores.base import StoreError, StoreUnavailable, VersionDocument
from apikey_operator.stores.vault import VaultStore
from apikey_operator.testing.servers import (
    FakeTokenReviewer,
    OpenBaoServer,
    free_port,
    service_account_jwt,
)
from tests.stores.conftest import GRACE_END, new_doc, new_ref
from tests.support.store_backends import VaultBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

KV_POLICY = 'path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }'


def metadata(backend: VaultBackend, path: str) -> dict[str, Any]:
    kv = backend.client().secrets.kv.v2
    data: dict[str, Any] = kv.read_secret_metadata(path=path, mount_point="secret")["data"]
    return data


def version_data(backend: VaultBackend, path: str, version: int) -> dict[str, Any]:
    kv = backend.client().secrets.kv.v2
    response = kv.read_secret_version(
        path=path, version=version, mount_point="secret", raise_on_deleted_version=True
    )
    data: dict[str, Any] = response["data"]["data"]
    return data


async def test_each_step_leaves_the_documented_layout(
    store_backend_vault: VaultBackend,
) -> None:
    backend = store_backend_vault
    store, ref = backend.make_store(), new_ref("payments", "billing")
    path = backend.path(ref)
    assert path.endswith("/payments/billing")
    assert store.location(ref) == f"vault:secret/{path}"

    first = await store.write_pending(ref, new_doc(1))
    meta = metadata(backend, path)
    assert meta["custom_metadata"] == {
        "managed-by": "apikey-operator",
        "owner-uid": ref.uid,
        "apikey-namespace": "payments",
        "apikey-name": "billing",
        "scopes": "invoices:read",
        "pending": "1",
    }
    stored = version_data(backend, path, 1)
    assert stored["key"] == first.key
    assert VersionDocument.from_json(stored["document"]) == first

    await store.promote(ref, 1, GRACE_END)
    custom = metadata(backend, path)["custom_metadata"]
    assert custom["current"] == "1" and "pending" not in custom and "previous" not in custom

    second = await store.write_pending(ref, new_doc(2, handles={"rotate": "r-1"}))
    await store.promote(ref, second.version, GRACE_END)
    custom = metadata(backend, path)["custom_metadata"]
    assert (custom["current"], custom["previous"]) == ("2", "1")
    assert custom["previous-valid-until"] == "2026-01-03T03:04:05Z"
    assert custom["handled-rotate"] == "r-1"

    await store.revoke(ref, 1)
    meta = metadata(backend, path)
    assert meta["versions"]["1"]["destroyed"] is True
    assert meta["versions"]["2"]["destroyed"] is False
    assert "previous" not in meta["custom_metadata"]
    assert "previous-valid-until" not in meta["custom_metadata"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        version_data(backend, path, 1)


async def test_the_consumer_library_reads_the_current_key(
    store_backend_vault: VaultBackend,
) -> None:
    backend = store_backend_vault
    store, ref = backend.make_store(), new_ref()
    await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    pending = await store.write_pending(ref, new_doc(2))
    source = VaultSource(client=backend.client(), mount="secret", path=backend.path(ref))
    current = (await store.read(ref)).current
    assert current is not None

    assert source.read() == current.key  # never the pending key

    await store.promote(ref, pending.version, GRACE_END)
    assert source.read() == pending.key


async def test_a_version_written_without_its_pointer_is_adopted(
    store_backend_vault: VaultBackend,
) -> None:
    backend = store_backend_vault
    store, ref = backend.make_store(), new_ref()
    await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    # A crash after the KV write of version 2, before the metadata named it pending.
    orphan = new_doc(2)
    backend.client().secrets.kv.v2.create_or_update_secret(
        path=backend.path(ref), mount_point="secret", cas=1,
        secret={"key": orphan.key, "document": orphan.to_json()},
    )
    assert (await store.read(ref)).pending is None

    adopted = await store.write_pending(ref, new_doc(2))

    assert adopted == orphan
    assert (await store.read(ref)).pending == orphan


async def test_a_document_is_renumbered_to_its_kv_version(
    store_backend_vault: VaultBackend,
) -> None:
    backend = store_backend_vault
    store, ref = backend.make_store(), new_ref()
    await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    revoked = await store.write_pending(ref, new_doc(2))
    await store.revoke(ref, revoked.version)

    replacement = await store.write_pending(ref, new_doc(2))

    assert replacement.version == 3
    assert metadata(backend, backend.path(ref))["custom_metadata"]["pending"] == "3"


async def test_a_crash_between_destroy_and_pointer_update_converges(
    store_backend_vault: VaultBackend,
) -> None:
    backend = store_backend_vault
    store, ref = backend.make_store(), new_ref()
    await store.write_pending(ref, new_doc(1))
    await store.promote(ref, 1, GRACE_END)
    await store.write_pending(ref, new_doc(2))
    await store.promote(ref, 2, GRACE_END)
    backend.client().secrets.kv.v2.destroy_secret_versions(
        path=backend.path(ref), versions=[1], mount_point="secret"
    )

    assert (await store.read(ref)).previous is None  # a destroyed version is never served
    await store.revoke(ref, 1)

    custom = metadata(backend, backend.path(ref))["custom_metadata"]
    assert "previous" not in custom and custom["current"] == "2"


async def test_a_sealed_vault_is_unavailable_until_unsealed(
    store_backend_vault: VaultBackend, openbao_server: OpenBaoServer
) -> None:
    store, ref = store_backend_vault.make_store(), new_ref()
    await store.write_pending(ref, new_doc(1))
    openbao_server.seal()
    try:
        with pytest.raises(StoreUnavailable, match="sealed"):
            await store.read(ref)
        with pytest.raises(StoreUnavailable):
            await store.promote(ref, 1, GRACE_END)
    finally:
        openbao_server.unseal()

    await store.promote(ref, 1, GRACE_END)
    assert (await store.read(ref)).current is not None


async def test_a_dead_address_is_unavailable(store_backend_vault: VaultBackend) -> None:
    store = store_backend_vault.make_store(address=f"http://127.0.0.1:{free_port()}")

    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await store.read(new_ref())


async def test_a_restarted_persistent_server_keeps_the_keys(tmp_path: Path) -> None:
    with OpenBaoServer(persistent=True, workdir=tmp_path / "bao") as server:
        token_file = server.write_token_file(tmp_path / "token")
        backend = VaultBackend(server, token_file, proxy=None)
        store, ref = backend.make_store(), new_ref()
        try:
            written = await store.write_pending(ref, new_doc(1))
            await store.promote(ref, written.version, GRACE_END)

            server.kill()
            with pytest.raises(StoreUnavailable):
                await store.read(ref)
            server.start()

            assert (await store.read(ref)).current == written
        finally:
            await backend.aclose()


async def test_a_token_without_permission_is_a_clear_error(
    store_backend_vault: VaultBackend, openbao_server: OpenBaoServer, tmp_path: Path
) -> None:
    weak = openbao_server.create_token('path "sys/*" { capabilities = ["read"] }', "weak")
    token_file = openbao_server.write_token_file(tmp_path / "weak-token", weak)
    store = store_backend_vault.make_store(auth={"tokenFile": str(token_file)})

    with pytest.raises(StoreError, match="permission denied") as caught:
        await store.read(new_ref())

    assert not isinstance(caught.value, StoreUnavailable)
    assert weak not in str(caught.value)


async def test_a_rewritten_token_file_is_picked_up(
    store_backend_vault: VaultBackend, openbao_server: OpenBaoServer, tmp_path: Path
) -> None:
    token_file = openbao_server.write_token_file(tmp_path / "token", "not-a-valid-token")
    store = store_backend_vault.make_store(auth={"tokenFile": str(token_file)})
    with pytest.raises(StoreError):
        await store.read(new_ref())

    openbao_server.write_token_file(token_file)
    os.utime(token_file, ns=(1, 1))  # a different mtime even on coarse clocks

    assert (await store.read(new_ref())).exists is False


@pytest.fixture
def approle(openbao_server: OpenBaoServer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    role_id, secret_id = openbao_server.enable_approle("apikey-operator", KV_POLICY, ttl="1h")
    secret_file = tmp_path / "secret-id"
    secret_file.write_text(secret_id)
    yield role_id, secret_file


async def test_approle_login_renewal_and_relogin(
    store_backend_vault: VaultBackend,
    openbao_server: OpenBaoServer,
    approle: tuple[str, Path],
) -> None:
    role_id, secret_file = approle
    store = store_backend_vault.make_store(
        auth={"method": "approle", "roleId": role_id, "secretIdFile": str(secret_file),
              "tokenFile": None},
    )
    assert isinstance(store, VaultStore)
    ref = new_ref()
    await store.write_pending(ref, new_doc(1))
    auth: Any = store._auth
    first_token = auth._token
    assert first_token and auth._lease > 0

    # Two thirds of the lease later, the token is renewed rather than replaced.
    now = auth._obtained + auth._lease * 0.7
    auth._clock = lambda: now
    await store.read(ref)
    assert auth._token == first_token and auth._obtained == now

    # Revoked behind our back: the 403 triggers a new login and the call succeeds.
    status, _ = openbao_server.api("POST", "auth/token/revoke", {"token": first_token})
    assert status in (200, 204)
    assert (await store.read(ref)).pending is not None
    assert auth._token != first_token


async def test_approle_with_a_wrong_secret_id_is_a_clear_error(
    store_backend_vault: VaultBackend, approle: tuple[str, Path], tmp_path: Path
) -> None:
    role_id, _ = approle
    wrong = tmp_path / "wrong-secret-id"
    wrong.write_text("00000000-0000-0000-0000-000000000000")
    store = store_backend_vault.make_store(
        auth={"method": "approle", "roleId": role_id, "secretIdFile": str(wrong),
              "tokenFile": None},
    )

    with pytest.raises(StoreError, match="approle login was refused") as caught:
        await store.read(new_ref())
    assert not isinstance(caught.value, StoreUnavailable)


def test_the_registry_builds_a_vault_store(openbao_token_file: Path) -> None:
    store = factory_for("vault")(
        "corp-vault",
        {"type": "vault", "address": "http://127.0.0.1:1",
         "auth": {"method": "token", "tokenFile": str(openbao_token_file)}},
        "apikey-operator",
    )
    assert isinstance(store, VaultStore)
    assert store.name == "corp-vault" and store.type_name == "vault"
    assert json.loads(json.dumps(store.config.mount)) == "secret"


@pytest.fixture
def token_reviewer() -> Iterator[FakeTokenReviewer]:
    with FakeTokenReviewer() as reviewer:
        yield reviewer


async def test_kubernetes_login_reads_the_projected_token_at_each_login(
    store_backend_vault: VaultBackend,
    openbao_server: OpenBaoServer,
    token_reviewer: FakeTokenReviewer,
    tmp_path: Path,
) -> None:
    openbao_server.enable_kubernetes_auth(token_reviewer, "apikey-operator", KV_POLICY)
    jwt_file = tmp_path / "token"
    first_jwt = token_reviewer.issue("apikey-operator", "apikey-operator")
    jwt_file.write_text(first_jwt)
    store = store_backend_vault.make_store(
        auth={"method": "kubernetes", "role": "apikey-operator", "jwtFile": str(jwt_file),
              "tokenFile": None},
    )
    ref = new_ref()

    await store.write_pending(ref, new_doc(1))
    assert token_reviewer.reviewed == [first_jwt]

    # The kubelet rotates the projected token; the Vault token is revoked meanwhile.
    second_jwt = token_reviewer.issue("apikey-operator", "apikey-operator")
    jwt_file.write_text(second_jwt)
    auth: Any = store._auth  # type: ignore[attr-defined]
    openbao_server.api("POST", "auth/token/revoke", {"token": auth._token})

    assert (await store.read(ref)).pending is not None
    assert token_reviewer.reviewed == [first_jwt, second_jwt]


async def test_a_refused_kubernetes_login_is_a_clear_error(
    store_backend_vault: VaultBackend,
    openbao_server: OpenBaoServer,
    token_reviewer: FakeTokenReviewer,
    tmp_path: Path,
) -> None:
    openbao_server.enable_kubernetes_auth(token_reviewer, "apikey-operator", KV_POLICY)
    jwt_file = tmp_path / "token"
    jwt_file.write_text(service_account_jwt("apikey-operator", "apikey-operator"))
    store = store_backend_vault.make_store(
        auth={"method": "kubernetes", "role": "apikey-operator", "jwtFile": str(jwt_file),
              "tokenFile": None},
    )

    with pytest.raises(StoreError, match=r"kubernetes \(role 'apikey-operator'\) login") as caught:
        await store.read(new_ref())
    assert not isinstance(caught.value, StoreUnavailable)


async def test_a_vault_namespace_keeps_entries_inside_it(
    store_backend_vault: VaultBackend, openbao_server: OpenBaoServer
) -> None:
    team = f"team-{uuid.uuid4().hex[:8]}"
    openbao_server.create_namespace(team)
    backend = store_backend_vault
    store, ref = backend.make_store(namespace=team), new_ref()

    written = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, written.version, GRACE_END)

    inside = hvac.Client(url=openbao_server.address, token=openbao_server.token,
                         namespace=team)
    data = inside.secrets.kv.v2.read_secret_version(
        path=backend.path(ref), mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert data["key"] == written.key
    assert backend.snapshot(ref) is None  # nothing in the root namespace
    assert (await backend.make_store().read(ref)).exists is False
