"""What only the Azure Key Vault store does: its name mapping, disabled versions,
soft delete, and its error mapping, against the Key Vault emulator."""

from __future__ import annotations

import itertools
import re
import string
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from hypothesis import given, settings
from hypothesis import strategies as st

from apikey_operator.stores import StoreConfigError, factory_for
from apikey_operator.stores.azure import (
    MAX_NAME,
    AzureKeyVaultStore,
    encode_ref,
    secret_name,
)
from apikey_operator.stores.base import StoreConflict, StoreError, StoreUnavailable
from tests.stores.conftest import GRACE_END, new_doc, new_ref
from tests.support.store_backends import AzureBackend

_ALLOWED = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
LONG_NAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters


def decode_ref(encoded: str) -> tuple[str, str]:
    """The inverse of encode_ref, written independently of it."""
    parts: list[list[str]] = [[]]
    chars = iter(encoded)
    for char in chars:
        if char != "-":
            parts[-1].append(char)
            continue
        escaped = next(chars)
        if escaped == "-":
            parts[-1].append("-")
        elif escaped == "d":
            parts[-1].append(".")
        elif escaped == "s":
            parts.append([])
        else:
            raise ValueError(f"bad escape -{escaped}")
    namespace, name = ("".join(p) for p in parts)
    return namespace, name


# -- the name mapping (pure) ----------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a-b", "c"), ("a", "b-c")),
        (("a", "b.c"), ("a", "b-c")),
        (("a", "b.c"), ("a", "bdc")),
        (("a", "b--c"), ("a", "b-c")),
        (("a-s", "b"), ("a", "sb")),
        (("ns", LONG_NAME), ("ns", LONG_NAME[:-1] + "e")),
        (("ns", "x" * 120), ("ns", "x" * 119)),
    ],
    ids=["dash-across-slash", "dot-vs-dash", "dot-vs-letter-d", "double-dash",
         "escape-letter-s", "long-names-differing-at-the-end", "around-the-hash-threshold"],
)
def test_names_that_collide_naively_get_different_secrets(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    one, other = secret_name("apikeys-", *first), secret_name("apikeys-", *second)
    assert one.lower() != other.lower()  # Key Vault compares names without case
    assert _ALLOWED.fullmatch(one) and _ALLOWED.fullmatch(other)


@pytest.mark.unit
def test_the_encoding_is_readable_and_decodable() -> None:
    assert encode_ref("a-b", "c") == "a--b-sc"
    assert encode_ref("a", "b-c") == "a-sb--c"
    assert encode_ref("payments", "my.api-key") == "payments-smy-dapi--key"
    assert secret_name("apikeys-", "payments", "billing") == "apikeys-payments-sbilling"
    assert decode_ref(encode_ref("a-b", "c.d-e")) == ("a-b", "c.d-e")


@pytest.mark.unit
def test_a_253_character_name_gets_a_hashed_name_of_at_most_127_characters() -> None:
    name = secret_name("apikeys-", "n" * 63, LONG_NAME)

    assert len(name) == MAX_NAME and _ALLOWED.fullmatch(name)
    assert name.startswith("apikeys--h")  # no plain encoding starts with "-"


# Small alphabets with the escape letters, so that near-collisions are common.
_NAMESPACE = st.text("ads1-", min_size=1, max_size=8).filter(
    lambda t: re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", t) is not None)
_NAME = st.text("ads1-.", min_size=1, max_size=8).filter(
    lambda t: re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", t) is not None and ".." not in t)


@pytest.mark.unit
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_NAMESPACE, _NAME), min_size=2, max_size=8, unique=True))
def test_distinct_short_refs_never_share_a_secret(refs: list[tuple[str, str]]) -> None:
    names = {secret_name("p-", ns, n).lower() for ns, n in refs}
    assert len(names) == len(refs)
    for ns, n in refs:
        assert decode_ref(encode_ref(ns, n)) == (ns, n)


@pytest.mark.unit
def test_long_refs_differing_anywhere_never_share_a_secret() -> None:
    suffixes = ["".join(p) for p in itertools.product("a.-" + string.digits, "ab1")]
    names = {secret_name("apikeys-", "ns", "x" * 250 + suffix).lower() for suffix in suffixes}
    assert len(names) == len(suffixes) == 39
    assert all(len(name) == MAX_NAME for name in names)


# -- against the emulator ---------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.parametrize(
    ("first", "second"),
    [(("a-b", "c"), ("a", "b-c")), (("ns", "a.b"), ("ns", "a-b")),
     (("ns", LONG_NAME), ("ns", LONG_NAME[:-1] + "e"))],
    ids=["dash-across-slash", "dot-vs-dash", "253-characters"],
)
async def test_colliding_apikeys_get_separate_vault_entries(
    store_backend_azure: AzureBackend, first: tuple[str, str], second: tuple[str, str]
) -> None:
    store = store_backend_azure.make_store()
    one, other = new_ref(*first), new_ref(*second)
    key_one = await store.write_pending(one, new_doc(1))
    key_other = await store.write_pending(other, new_doc(1))

    assert store.location(one) != store.location(other)
    assert (await store.read(one)).pending == key_one
    assert (await store.read(other)).pending == key_other
    client = store_backend_azure.client()
    for ref in (one, other):
        listed = list(client.list_properties_of_secret_versions(
            store_backend_azure.secret_name(ref)))
        assert [p.tags["owner-uid"] for p in listed] == [ref.uid]


@pytest.mark.integration
async def test_a_revoked_version_is_disabled_and_unreadable_through_the_sdk(
    store_backend_azure: AzureBackend,
) -> None:
    store, ref = store_backend_azure.make_store(), new_ref()
    first = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, first.version, GRACE_END)
    second = await store.write_pending(ref, new_doc(2))
    await store.promote(ref, second.version, GRACE_END)

    await store.revoke(ref, first.version)

    client = store_backend_azure.client()
    name = store_backend_azure.secret_name(ref)
    by_stage = {p.tags["stage"]: p for p in client.list_properties_of_secret_versions(name)}
    assert set(by_stage) == {"current", "revoked"}
    assert by_stage["revoked"].enabled is False
    with pytest.raises(HttpResponseError) as denied:
        client.get_secret(name, by_stage["revoked"].version)
    assert denied.value.status_code == 403
    assert first.key not in str(denied.value)
    assert second.key in client.get_secret(name, by_stage["current"].version).value


@pytest.mark.integration
async def test_the_current_version_cannot_be_revoked(store_backend_azure: AzureBackend) -> None:
    store, ref = store_backend_azure.make_store(), new_ref()
    first = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, first.version, GRACE_END)

    with pytest.raises(StoreError, match="current"):
        await store.revoke(ref, first.version)

    assert (await store.read(ref)).current == first


@pytest.mark.integration
async def test_a_promotion_interrupted_after_its_first_write_reads_as_unpromoted(
    store_backend_azure: AzureBackend,
) -> None:
    store, ref = store_backend_azure.make_store(), new_ref()
    first = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, first.version, GRACE_END)
    second = await store.write_pending(ref, new_doc(2, handles={"rotate": "r"}))
    client = store_backend_azure.client()
    name = store_backend_azure.secret_name(ref)
    # What a crash right after promote's first write leaves: the old current is previous.
    old = next(p for p in client.list_properties_of_secret_versions(name)
               if p.tags["stage"] == "current")
    client.update_secret_properties(name, old.version, tags={**old.tags, "stage": "previous"})

    state = await store.read(ref)

    assert (state.current, state.pending, state.previous) == (first, second, None)
    with pytest.raises(StoreError):
        await store.revoke(ref, first.version)  # still the current key for consumers
    await store.promote(ref, second.version, GRACE_END)
    state = await store.read(ref)
    assert (state.current, state.previous) == (second, first)
    assert state.handled == {"rotate": "r"}


@pytest.mark.integration
async def test_without_purge_a_deleted_secret_stays_recoverable_and_blocks_its_name(
    store_backend_azure: AzureBackend,
) -> None:
    store, ref = store_backend_azure.make_store(purgeOnDelete=False), new_ref()
    first = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, first.version, GRACE_END)

    await store.delete(ref)
    await store.delete(ref)

    client = store_backend_azure.client()
    name = store_backend_azure.secret_name(ref)
    assert client.get_deleted_secret(name).properties.tags["owner-uid"] == ref.uid
    with pytest.raises(ResourceNotFoundError):
        client.get_secret(name)
    assert (await store.read(ref)).exists is False
    with pytest.raises(StoreUnavailable, match="purge") as caught:
        await store.write_pending(ref, new_doc(1))
    assert caught.value.retry_after

    # Once purged (by the store configured to, for its own secret only), the name is free.
    await store_backend_azure.make_store(purgeOnDelete=True).delete(ref)
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret(name)
    assert (await store.write_pending(ref, new_doc(1))).key


@pytest.mark.integration
async def test_a_purge_never_touches_a_foreign_deleted_secret(
    store_backend_azure: AzureBackend,
) -> None:
    ref = new_ref()
    store_backend_azure.plant_foreign(ref, "someone-else")
    client = store_backend_azure.client()
    name = store_backend_azure.secret_name(ref)
    client.begin_delete_secret(name).wait()

    await store_backend_azure.make_store(purgeOnDelete=True).delete(ref)

    assert client.get_deleted_secret(name).properties.tags["owner-uid"] == "someone-else"


@pytest.mark.integration
async def test_forbidden_is_reported_as_such_and_never_retried_as_an_outage(
    store_backend_azure: AzureBackend,
) -> None:
    store, ref = store_backend_azure.make_store(), new_ref()
    first = await store.write_pending(ref, new_doc(1))
    store_backend_azure.server.deny(True)
    try:
        with pytest.raises(StoreError) as caught:
            await store.read(ref)
    finally:
        store_backend_azure.server.deny(False)

    assert not isinstance(caught.value, StoreUnavailable | StoreConflict)
    assert "denied" in str(caught.value) and "secrets get, set, list and delete" in str(
        caught.value)
    assert first.key not in str(caught.value)


@pytest.mark.integration
async def test_a_missing_identity_is_an_authentication_error(
    store_backend_azure: AzureBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AZURE_CONFIG_DIR", "/nonexistent")
    monkeypatch.setenv("PATH", "/nonexistent")  # no az / azd / pwsh to fall back on
    store = store_backend_azure.make_store(timeoutSeconds=30)

    with pytest.raises(StoreError, match="did not authenticate") as caught:
        await store.read(new_ref())

    assert not isinstance(caught.value, StoreUnavailable)


@pytest.mark.integration
async def test_a_server_certificate_outside_the_ca_file_is_refused(
    store_backend_azure: AzureBackend,
) -> None:
    import certifi  # the public CAs: none of them signed the emulator's certificate

    store = store_backend_azure.make_store(caFile=certifi.where())

    with pytest.raises(StoreError, match="TLS") as caught:
        await store.read(new_ref())

    assert not isinstance(caught.value, StoreUnavailable)


# -- config -----------------------------------------------------------------------------------


@pytest.mark.unit
def test_the_config_is_validated_with_one_message_per_field(tmp_path: Path) -> None:
    with pytest.raises(StoreConfigError) as caught:
        factory_for("azure-key-vault")("azure", {
            "type": "azure-key-vault", "vaultUrl": "http://kv.example", "namePrefix": "a_b",
            "auth": {"method": "client-secret", "tenantId": "t", "clientId": "c",
                     "clientSecretFile": str(tmp_path / "missing")},
            "purgeOnDelete": "yes", "colour": "blue",
        }, "ns")

    message = str(caught.value)
    for field in ("vaultUrl", "namePrefix", "auth.clientSecretFile", "purgeOnDelete", "colour"):
        assert field in message


@pytest.mark.unit
def test_a_valid_config_builds_a_store_whose_ref_names_host_and_secret() -> None:
    store = factory_for("azure-key-vault")("corp", {
        "type": "azure-key-vault", "vaultUrl": "https://payments-kv.vault.azure.net/",
    }, "ns")

    assert isinstance(store, AzureKeyVaultStore)
    assert store.location(new_ref("payments", "billing.v2")) == (
        "azure:payments-kv.vault.azure.net/apikeys-payments-sbilling-dv2")


@pytest.mark.integration
async def test_a_pending_write_that_landed_twice_is_promoted_once(
    store_backend_azure: AzureBackend,
) -> None:
    store, ref = store_backend_azure.make_store(), new_ref()
    first = await store.write_pending(ref, new_doc(1))
    client = store_backend_azure.client()
    name = store_backend_azure.secret_name(ref)
    (written,) = list(client.list_properties_of_secret_versions(name))
    # The same PUT arriving a second time (its first answer lost): an identical version.
    client.set_secret(name, client.get_secret(name, written.version).value,
                      tags=written.tags, content_type=written.content_type)

    await store.promote(ref, first.version, GRACE_END)

    state = await store.read(ref)
    assert (state.current, state.pending, state.previous) == (first, None, None)
    second = await store.write_pending(ref, new_doc(state.next_version()))
    assert second.version > first.version and second.key != first.key
