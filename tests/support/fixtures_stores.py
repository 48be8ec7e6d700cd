"""pytest fixtures for the store backends; load with ``pytest_plugins``.

``pytest_plugins = ["tests.support.fixtures_stores"]`` provides:

- ``openbao_server`` (session): a started dev `OpenBaoServer` (in-memory data);
- ``moto_server`` (session): a started `MotoServer`;
- ``keyvault_server`` (session): a started `KeyVaultServer` (the Key Vault emulator);
- ``store_backend_vault`` / ``store_backend_aws`` / ``store_backend_azure``: a
  `VaultBackend` / `AwsBackend` / `AzureBackend` with
  a path prefix of its own (tests never see each other's entries) and a `TcpProxy`
  in front of the server for outages; stores made from it are closed after the test;
- ``store_backend``: ``store_backend("vault")`` returns the ``store_backend_<name>``
  fixture, so another backend (e.g. ``kubernetes``) plugs in by defining
  ``store_backend_kubernetes``;
- ``make_store``: ``make_store("aws", timeoutSeconds=1)`` -> a fresh Store;
- ``counting_store``: ``counting_store(store)`` -> a `CountingStore` around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from apikey_operator.stores import Store
from apikey_operator.testing.servers import KeyVaultServer, MotoServer, OpenBaoServer, TcpProxy
from tests.support.counting_store import CountingStore
from tests.support.store_backends import (
    AWS_TEST_CREDENTIALS,
    AwsBackend,
    AzureBackend,
    StoreBackend,
    VaultBackend,
)


@pytest.fixture(scope="session")
def openbao_server() -> Iterator[OpenBaoServer]:
    with OpenBaoServer() as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def keyvault_server() -> Iterator[KeyVaultServer]:
    with KeyVaultServer() as server:
        yield server


@pytest.fixture
def azure_test_identity(keyvault_server: KeyVaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """DefaultAzureCredential finds the emulator's managed identity, and nothing else."""
    for name, value in keyvault_server.identity_env().items():
        monkeypatch.setenv(name, value)
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                 "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST", "MSI_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def openbao_token_file(openbao_server: OpenBaoServer, tmp_path: Path) -> Path:
    """The root token in a file, as `auth: {method: token, tokenFile: ...}` reads it."""
    return openbao_server.write_token_file(tmp_path / "vault-token")


@pytest.fixture
def aws_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials in the default chain, and no real AWS profile or config."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_TEST_CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_TEST_CREDENTIALS["aws_secret_access_key"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest_asyncio.fixture
async def store_backend_vault(
    openbao_server: OpenBaoServer, openbao_token_file: Path
) -> AsyncIterator[VaultBackend]:
    with TcpProxy(openbao_server.port) as proxy:
        backend = VaultBackend(openbao_server, openbao_token_file, proxy)
        try:
            yield backend
        finally:
            await backend.aclose()


@pytest_asyncio.fixture
async def store_backend_aws(
    moto_server: MotoServer, aws_test_credentials: None
) -> AsyncIterator[AwsBackend]:
    with TcpProxy(moto_server.port) as proxy:
        backend = AwsBackend(moto_server, proxy)
        try:
            yield backend
        finally:
            await backend.aclose()


@pytest_asyncio.fixture
async def store_backend_azure(
    keyvault_server: KeyVaultServer, azure_test_identity: None
) -> AsyncIterator[AzureBackend]:
    with TcpProxy(keyvault_server.port) as proxy:
        backend = AzureBackend(keyvault_server, proxy)
        try:
            yield backend
        finally:
            await backend.aclose()


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> Callable[[str], StoreBackend]:
    """`store_backend(name)`: the backend fixture ``store_backend_<name>``."""

    def get(name: str) -> StoreBackend:
        backend: StoreBackend = request.getfixturevalue(f"store_backend_{name}")
        return backend

    return get


@pytest.fixture
def make_store(store_backend: Callable[[str], StoreBackend]) -> Callable[..., Store]:
    """`make_store(name, **config_overrides)`: a fresh store of that backend."""

    def make(name: str, **overrides: Any) -> Store:
        return store_backend(name).make_store(**overrides)

    return make


@pytest.fixture
def counting_store() -> Callable[[Store], CountingStore]:
    return CountingStore
