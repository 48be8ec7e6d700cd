"""Shared servers and builders for the reliability suite (crashes, faults, tenancy, load).

OpenBao, moto and the Key Vault emulator are started once per session; every
test gets its own emulated API server and its own store path prefix, so tests
never see each other's keys. Operator processes inherit dummy AWS credentials
and the emulator's managed identity from the environment this module sets up.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from apikey_operator import metrics
from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.servers import KeyVaultServer, MotoServer, OpenBaoServer
from tests.support.faults_contract import StoreProbe
from tests.support.store_backends import AWS_TEST_CREDENTIALS, AWS_TEST_REGION

STORE_KINDS = ("kubernetes", "vault", "aws", "azure")


@contextlib.contextmanager
def environment(wanted: dict[str, str], unset: tuple[str, ...] = ()) -> Iterator[None]:
    """`wanted` set and `unset` removed in os.environ (child processes inherit them)."""
    saved = {k: os.environ.get(k) for k in [*wanted, *unset]}
    os.environ.update(wanted)
    for key in unset:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def aws_environment() -> Iterator[None]:
    """Dummy credentials for boto3 in this process and in operator child processes."""
    wanted = {"AWS_ACCESS_KEY_ID": AWS_TEST_CREDENTIALS["aws_access_key_id"],
              "AWS_SECRET_ACCESS_KEY": AWS_TEST_CREDENTIALS["aws_secret_access_key"],
              "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
              "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in [*wanted, "AWS_SESSION_TOKEN", "AWS_PROFILE"]}
    os.environ.update(wanted)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def keyvault() -> Iterator[KeyVaultServer]:
    """The Key Vault emulator, its managed identity in os.environ for DefaultAzureCredential
    in this process and in operator child processes."""
    with KeyVaultServer() as server, environment(
        server.identity_env(),
        unset=("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
               "AZURE_FEDERATED_TOKEN_FILE", "MSI_ENDPOINT"),
    ):
        yield server


def azure_store_config(server: KeyVaultServer, unique: str, address: str | None = None,
                       **extra: Any) -> dict[str, Any]:
    """An azure-key-vault block for `server` (or a proxy to it at `address`, http://...)."""
    host = address.split("://", 1)[1] if address else server.host
    return {"type": "azure-key-vault", "vaultUrl": f"https://{host}",
            "namePrefix": f"{unique}-", "caFile": server.ca_file,
            "verifyChallengeResource": False, "purgeOnDelete": True,
            "timeoutSeconds": 2, **extra}


@pytest.fixture(scope="session")
def bao() -> Iterator[OpenBaoServer]:
    with OpenBaoServer() as server:
        yield server


@pytest.fixture(scope="session")
def moto(aws_environment: None) -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def bao_token_file(bao: OpenBaoServer, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return bao.write_token_file(tmp_path_factory.mktemp("bao") / "token")


StoreConfigFactory = Callable[..., tuple[str, dict[str, Any]]]


def store_config_for(request: pytest.FixtureRequest, kind: str, address: str | None = None,
                     **extra: Any) -> tuple[str, dict[str, Any]]:
    """(store name, config) for `kind` with a path prefix of its own; `address` points
    Vault/AWS at a proxy instead of the server. Starts the session server on first use."""
    unique = f"r{secrets.token_hex(4)}"
    if kind == "kubernetes":
        return "kubernetes", {"type": "kubernetes"}
    if kind == "vault":
        server: OpenBaoServer = request.getfixturevalue("bao")
        token: pathlib.Path = request.getfixturevalue("bao_token_file")
        return "vault", {"type": "vault", "address": address or server.address,
                         "mount": "secret", "pathPrefix": f"apikeys/{unique}",
                         "auth": {"method": "token", "tokenFile": str(token)},
                         "timeoutSeconds": 2, **extra}
    if kind == "aws":
        moto_server: MotoServer = request.getfixturevalue("moto")
        return "aws", {"type": "aws-secrets-manager", "region": AWS_TEST_REGION,
                       "namePrefix": f"apikeys/{unique}/",
                       "endpointUrl": address or moto_server.endpoint_url,
                       "timeoutSeconds": 2, **extra}
    if kind == "azure":
        keyvault: KeyVaultServer = request.getfixturevalue("keyvault")
        return "azure", azure_store_config(keyvault, unique, address, **extra)
    raise ValueError(f"unknown store kind {kind!r}")


@pytest.fixture
def store_config(request: pytest.FixtureRequest) -> StoreConfigFactory:
    """`store_config(kind, address=None, **extra)`: see `store_config_for`."""

    def make(kind: str, address: str | None = None, **extra: Any) -> tuple[str, dict[str, Any]]:
        return store_config_for(request, kind, address, **extra)

    return make


@pytest.fixture
def bare_cluster() -> Iterator[LocalCluster]:
    """The control plane alone (the test runs the operator as a process or a thread)."""
    with LocalCluster(start_operator=False, namespaces=("default", "payments", "team-a",
                                                        "team-b")) as local:
        yield local


def probe_for(cluster: LocalCluster, store: tuple[str, dict[str, Any]]) -> StoreProbe:
    return StoreProbe(cluster.api, store[0], store[1])


def assert_no_leaks(cluster: LocalCluster, *extra_text: str) -> None:
    """No key the operator generated appears in logs, Events, status, metadata or metrics."""
    seen = "\n".join([cluster.visible_text(), generate_latest(metrics.REGISTRY).decode(),
                      *extra_text])
    leaks = cluster.recorder.leaks_in(seen)
    assert not leaks, f"keys leaked into logs, events, status or metadata: {leaks}"


# The suite-wide leak scan, for this folder until the top-level conftest registers it.
from tests.support.faults_leakscan import suite_leak_scan  # noqa: E402, F401
