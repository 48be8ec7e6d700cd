"""`ApiKeyProvider.from_reference(status.storeRef)` reads the key each store holds,
on the real servers, and refuses malformed references."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from apikey_operator.client import (
    ApiKeyProvider,
    AzureKeyVaultSource,
    InvalidReference,
    KubernetesSecretSource,
    MountedSecretSource,
    SourceUnavailable,
    VaultSource,
    parse_reference,
)
from apikey_operator.testing.controlplane import shared_control_plane
from tests.stores.conftest import new_doc, new_ref
from tests.support.fixtures_stores import (  # noqa: F401 (fixtures)
    aws_test_credentials,
    azure_test_identity,
    keyvault_server,
    moto_server,
    openbao_server,
    openbao_token_file,
    store_backend_aws,
    store_backend_azure,
    store_backend_vault,
)
from tests.support.store_backend_kubernetes import (  # noqa: F401 (fixture)
    store_backend_kubernetes,
)
from tests.support.store_backends import StoreBackend, azure_secret_client

GRACE_END = datetime.now(UTC) + timedelta(hours=1)


@pytest.fixture
def kube_backend(request: pytest.FixtureRequest) -> StoreBackend:
    found: StoreBackend = request.getfixturevalue("store_backend_kubernetes")
    return found


def reference_client(backend: StoreBackend, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What an application passes (None: the SDK's default client, set up by environment)."""
    if backend.name == "kubernetes":
        plane = shared_control_plane()
        return {"server": plane.url, "token": plane.admin_token, "ca_file": plane.ca_file}
    if backend.name == "vault":
        server = backend.server  # type: ignore[attr-defined]
        monkeypatch.setenv("VAULT_ADDR", server.address)
        monkeypatch.setenv("VAULT_TOKEN", server.token)
        return None
    if backend.name == "aws":
        monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER",
                           backend.server.endpoint_url)  # type: ignore[attr-defined]
        return None
    # The emulator's challenge names vault.azure.net, which its loopback host cannot match.
    return azure_secret_client(backend.server)  # type: ignore[attr-defined]


@pytest.fixture(params=["kubernetes", "vault", "aws", "azure"])
def backend(request: pytest.FixtureRequest) -> StoreBackend:
    found: StoreBackend = request.getfixturevalue(f"store_backend_{request.param}")
    return found


@pytest.mark.integration
async def test_the_store_ref_builds_a_provider_for_the_current_key(
    backend: StoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ref = backend.make_store(), new_ref("refs", "billing.client")
    reference = store.location(ref)
    assert reference.startswith(f"{backend.name}:")
    client = reference_client(backend, monkeypatch)

    first = await store.write_pending(ref, new_doc(1))
    with pytest.raises(SourceUnavailable):  # pending only: no key for consumers yet
        ApiKeyProvider.from_reference(reference, client=client, ttl=0).get()
    await store.promote(ref, first.version, GRACE_END)
    provider = ApiKeyProvider.from_reference(reference, client=client, ttl=0)
    assert provider.get() == first.key

    second = await store.write_pending(ref, new_doc(2))
    assert provider.get() == first.key  # a pending key is never handed out
    await store.promote(ref, second.version, GRACE_END)
    await store.revoke(ref, first.version)
    assert provider.get() == second.key
    assert await provider.aget() == second.key


@pytest.mark.integration
async def test_a_file_reference_reads_a_mounted_key(tmp_path: Path) -> None:
    folder = tmp_path / "billing"
    folder.mkdir()
    (folder / "api-key").write_text("bill_mounted")

    provider = ApiKeyProvider.from_reference(f"file:{folder}/api-key", ttl=0)

    assert isinstance(provider.source, MountedSecretSource)
    assert provider.get() == "bill_mounted"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("ref", "kind", "location"),
    [
        ("kubernetes:apikey-operator/ak.payments.billing", KubernetesSecretSource,
         "kubernetes:apikey-operator/ak.payments.billing"),
        ("vault:secret/apikeys/payments/billing", VaultSource,
         "vault:secret/apikeys/payments/billing"),
        ("vault:team/kv/apikeys/p/b?mount=team/kv", VaultSource, "vault:team/kv/apikeys/p/b"),
        ("azure:payments-kv.vault.azure.net/apikeys-payments-sbilling", AzureKeyVaultSource,
         "azure:payments-kv.vault.azure.net/apikeys-payments-sbilling"),
    ],
    ids=["kubernetes", "vault", "vault-mount-with-slash", "azure"],
)
def test_each_scheme_builds_its_source(ref: str, kind: type, location: str) -> None:
    class Client:  # only stored by the source until it reads
        vault_url = "https://payments-kv.vault.azure.net"

    client: Any = {} if kind is KubernetesSecretSource else Client()
    provider = ApiKeyProvider.from_reference(ref, client=client)

    assert isinstance(provider.source, kind)
    assert provider.source.description == location
    if kind is VaultSource:
        assert provider.source.path.startswith("apikeys/")


@pytest.mark.unit
def test_an_aws_reference_keeps_its_region() -> None:
    parsed = parse_reference("aws:apikeys/payments/billing?region=eu-west-1")
    assert (parsed.scheme, parsed.location, parsed.options) == (
        "aws", "apikeys/payments/billing", {"region": "eu-west-1"})


@pytest.mark.unit
@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("", "empty"),
        ("sk_live_0123456789", "no known scheme"),
        ("gcp:projects/x/secrets/y", "no known scheme"),
        ("corp:secret/apikeys/a/b", "no known scheme"),
        ("kubernetes:only-a-name", "kubernetes:<namespace>/<secret name>"),
        ("kubernetes:NS/x", "kubernetes:<namespace>/<secret name>"),
        ("vault:secret", "vault:<mount>/<path>"),
        ("vault:secret//x", "vault:<mount>/<path>"),
        ("vault:a/b/c?mount=z", "mount option"),
        ("aws:", "aws:<secret name>"),
        ("aws:apikeys/a/b?region=mars", "not an AWS region"),
        ("aws:apikeys/a/b?colour=red", "unknown option"),
        ("azure:kv.vault.azure.net/a_b", "azure:<vault host>/<secret name>"),
        ("azure:kv.vault.azure.net", "azure:<vault host>/<secret name>"),
        ("file:relative/api-key", "absolute"),
        ("file:/etc/apikeys/../shadow/x", "absolute"),
    ],
)
def test_a_malformed_reference_is_refused_with_the_expected_form(ref: str, says: str) -> None:
    with pytest.raises(InvalidReference, match=says.replace("?", r"\?")):
        ApiKeyProvider.from_reference(ref)


@pytest.mark.unit
def test_an_error_quotes_no_more_than_the_start_of_a_pasted_value() -> None:
    pasted = "sk_live_" + "x" * 200

    with pytest.raises(InvalidReference) as caught:
        parse_reference(pasted)

    assert pasted not in str(caught.value)


@pytest.mark.integration
async def test_a_kubernetes_reference_without_permission_is_unavailable(
    kube_backend: StoreBackend,
) -> None:
    store, ref = kube_backend.make_store(), new_ref()
    first = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, first.version, GRACE_END)
    plane = shared_control_plane()

    source = KubernetesSecretSource(
        *store.location(ref).removeprefix("kubernetes:").split("/"),
        server=plane.url, token=base64.b64encode(b"not-a-token").decode(), ca_file=plane.ca_file,
    )

    with pytest.raises(SourceUnavailable, match="token was not accepted") as caught:
        source.read()
    assert first.key not in str(caught.value)
