"""One object per store backend for tests: builds stores and reaches behind them.

A `StoreBackend` knows how to configure a fresh store object against its server
(every store it makes shares the backend's data, like a restarted operator
would), how to plant an entry the operator did not create at a derived path,
and how to snapshot an entry's raw content with the backend's own SDK. The
contract suite is written against this interface only, so a new backend is one
class (or fixture) away.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from apikey_operator.stores import Store, factory_for
from apikey_operator.stores.base import KeyRef
from apikey_operator.testing.servers import (
    AWS_INTERNAL_ERROR,
    AWS_THROTTLED,
    VAULT_INTERNAL_ERROR,
    VAULT_RATE_LIMITED,
    VAULT_SEALED,
    KeyVaultServer,
    MotoServer,
    OpenBaoServer,
    TcpProxy,
)

OPERATOR_NAMESPACE = "apikey-operator"
# Generous: a loaded 2-core CI machine can take seconds to answer; outages use the proxy.
TEST_TIMEOUT_SECONDS = 5.0
AWS_TEST_REGION = "us-east-1"
AWS_TEST_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class StoreBackend(Protocol):
    """What the contract suite needs from a backend."""

    name: str
    # Cut or hang the path between stores and their server (None: no outage simulation).
    proxy: TcpProxy | None
    # Canned server answers that mean "try later", by kind ("sealed", "throttled", "5xx"),
    # for `proxy.answering(...)`; kinds a backend cannot produce are absent.
    unavailable_answers: Mapping[str, bytes]

    def config(self, **overrides: Any) -> dict[str, Any]:
        """The store's config block (with `type`), `overrides` merged in."""
        ...

    def make_store(self, **overrides: Any) -> Store:
        """A fresh store object over the backend's data (closed by `aclose`)."""
        ...

    def plant_foreign(self, ref: KeyRef, owner_uid: str | None) -> None:
        """Create an entry at `ref`'s derived path with the raw SDK: without the
        managed-by marker (`owner_uid` None) or marked as owned by `owner_uid`."""
        ...

    def snapshot(self, ref: KeyRef) -> Any:
        """The entry's raw content, comparable with ==; None when there is none."""
        ...

    async def aclose(self) -> None:
        ...


class _BackendBase:
    name = ""
    store_type = ""
    unavailable_answers: Mapping[str, bytes] = {}

    def __init__(self, proxy: TcpProxy | None) -> None:
        self.proxy = proxy
        self._stores: list[Store] = []

    def base_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def config(self, **overrides: Any) -> dict[str, Any]:
        return _merge({"type": self.store_type, **self.base_config()}, overrides)

    def make_store(self, **overrides: Any) -> Store:
        factory = factory_for(self.store_type)
        store = factory(self.name, self.config(**overrides), OPERATOR_NAMESPACE)
        self._stores.append(store)
        return store

    async def aclose(self) -> None:
        stores, self._stores = self._stores, []
        for store in stores:
            await store.close()


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def unique_prefix() -> str:
    """A path segment that keeps one test's entries apart from every other test's."""
    return f"t{secrets.token_hex(5)}"


class VaultBackend(_BackendBase):
    """OpenBao KV v2 behind a proxy; every backend object gets its own pathPrefix."""

    name = "vault"
    store_type = "vault"
    unavailable_answers: Mapping[str, bytes] = {
        "sealed": VAULT_SEALED, "throttled": VAULT_RATE_LIMITED, "5xx": VAULT_INTERNAL_ERROR,
    }

    def __init__(self, server: OpenBaoServer, token_file: Path, proxy: TcpProxy | None) -> None:
        super().__init__(proxy)
        self.server = server
        self.token_file = token_file
        self.mount = "secret"
        self.path_prefix = f"apikeys/{unique_prefix()}"

    def base_config(self) -> dict[str, Any]:
        return {
            "address": self.proxy.address if self.proxy else self.server.address,
            "mount": self.mount,
            "pathPrefix": self.path_prefix,
            "auth": {"method": "token", "tokenFile": str(self.token_file)},
            "timeoutSeconds": TEST_TIMEOUT_SECONDS,
        }

    def path(self, ref: KeyRef) -> str:
        return f"{self.path_prefix}/{ref.namespace}/{ref.name}"

    def client(self) -> Any:
        """An hvac client straight to the server (not through the proxy), as root."""
        import hvac

        return hvac.Client(url=self.server.address, token=self.server.token, timeout=5)

    def plant_foreign(self, ref: KeyRef, owner_uid: str | None) -> None:
        kv = self.client().secrets.kv.v2
        kv.create_or_update_secret(
            path=self.path(ref), secret={"key": "foreign-value", "note": "not the operator's"},
            mount_point=self.mount,
        )
        if owner_uid is not None:
            kv.update_metadata(
                path=self.path(ref), mount_point=self.mount,
                custom_metadata={"managed-by": "apikey-operator", "owner-uid": owner_uid,
                                 "current": "1"},
            )

    def snapshot(self, ref: KeyRef) -> Any:
        import hvac.exceptions

        kv = self.client().secrets.kv.v2
        try:
            meta = kv.read_secret_metadata(path=self.path(ref), mount_point=self.mount)["data"]
        except hvac.exceptions.InvalidPath:
            return None
        versions = {}
        for number, info in sorted(meta["versions"].items()):
            try:
                data = kv.read_secret_version(
                    path=self.path(ref), version=int(number), mount_point=self.mount,
                    raise_on_deleted_version=True,
                )["data"]["data"]
            except hvac.exceptions.InvalidPath:
                data = None
            versions[number] = (info["destroyed"], data)
        return {"custom": meta.get("custom_metadata"), "latest": meta["current_version"],
                "versions": versions}


class AwsBackend(_BackendBase):
    """moto's Secrets Manager behind a proxy; every backend object gets its own namePrefix.

    Stores find credentials in the default chain: set AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY (the `store_backend_aws` fixture does).
    """

    name = "aws"
    store_type = "aws-secrets-manager"
    unavailable_answers: Mapping[str, bytes] = {
        "throttled": AWS_THROTTLED, "5xx": AWS_INTERNAL_ERROR,
    }

    def __init__(self, server: MotoServer, proxy: TcpProxy | None) -> None:
        super().__init__(proxy)
        self.server = server
        self.name_prefix = f"apikeys/{unique_prefix()}/"
        self._client: Any = None

    def base_config(self) -> dict[str, Any]:
        return {
            "region": AWS_TEST_REGION,
            "namePrefix": self.name_prefix,
            "endpointUrl": self.proxy.address if self.proxy else self.server.endpoint_url,
            "timeoutSeconds": TEST_TIMEOUT_SECONDS,
        }

    def secret_name(self, ref: KeyRef) -> str:
        return f"{self.name_prefix}{ref.namespace}/{ref.name}"

    def client(self) -> Any:
        """A boto3 Secrets Manager client straight to moto (not through the proxy)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        import boto3

        return boto3.client(
            "secretsmanager",
            endpoint_url=self.server.endpoint_url,
            region_name=AWS_TEST_REGION,
            aws_access_key_id=AWS_TEST_CREDENTIALS["aws_access_key_id"],
            aws_secret_access_key=AWS_TEST_CREDENTIALS["aws_secret_access_key"],
        )

    def plant_foreign(self, ref: KeyRef, owner_uid: str | None) -> None:
        tags = []
        if owner_uid is not None:
            tags = [{"Key": "managed-by", "Value": "apikey-operator"},
                    {"Key": "apikeys.dev/owner-uid", "Value": owner_uid}]
        self.client().create_secret(
            Name=self.secret_name(ref), SecretString='{"key": "foreign-value"}', Tags=tags
        )

    def snapshot(self, ref: KeyRef) -> Any:
        client = self.client()
        try:
            described = client.describe_secret(SecretId=self.secret_name(ref))
        except client.exceptions.ResourceNotFoundException:
            return None
        stages = described.get("VersionIdsToStages", {})
        values = {
            vid: client.get_secret_value(SecretId=self.secret_name(ref), VersionId=vid)[
                "SecretString"
            ]
            for vid in stages
        }
        tags = sorted((t["Key"], t["Value"]) for t in described.get("Tags", []))
        return {"tags": tags, "stages": {k: sorted(v) for k, v in stages.items()},
                "values": values, "description": described.get("Description")}

    def stages(self, ref: KeyRef) -> dict[str, list[str]]:
        """VersionId -> sorted staging labels, from list_secret_version_ids."""
        listed = self.client().list_secret_version_ids(
            SecretId=self.secret_name(ref), IncludeDeprecated=True
        )
        return {v["VersionId"]: sorted(v.get("VersionStages", [])) for v in listed["Versions"]}


class AzureBackend(_BackendBase):
    """The Key Vault emulator behind a proxy; every backend object gets its own namePrefix.

    Stores authenticate with DefaultAzureCredential through the emulator's managed
    identity: set its `identity_env()` (the `store_backend_azure` fixture does).
    Throttling and 5xx are the emulator's own answers (`server.fail_next`): the proxy
    cannot forge a response inside TLS.
    """

    name = "azure"
    store_type = "azure-key-vault"

    def __init__(self, server: KeyVaultServer, proxy: TcpProxy | None) -> None:
        super().__init__(proxy)
        self.server = server
        self.name_prefix = f"{unique_prefix()}-"
        self._client: Any = None

    def base_config(self) -> dict[str, Any]:
        host = f"127.0.0.1:{self.proxy.port}" if self.proxy else self.server.host
        return {
            "vaultUrl": f"https://{host}",
            "namePrefix": self.name_prefix,
            "auth": {"method": "default"},
            "caFile": self.server.ca_file,
            "verifyChallengeResource": False,
            "purgeOnDelete": True,
            "timeoutSeconds": TEST_TIMEOUT_SECONDS,
        }

    def secret_name(self, ref: KeyRef) -> str:
        from apikey_operator.stores.azure import secret_name

        return secret_name(self.name_prefix, ref.namespace, ref.name)

    def entry_name(self, ref: KeyRef) -> str:
        """The part of `location` that names the entry (the encoded name)."""
        return self.secret_name(ref)

    # What `answering` can make the emulator say: 429 with a Retry-After, or 503.
    answer_kinds = ("throttled", "5xx")

    @contextlib.contextmanager
    def answering(self, kind: str) -> Iterator[Callable[[], int]]:
        """Every vault request answers `kind` until the block ends; yields a counter of
        the requests answered so."""
        status, retry_after = (429, 7) if kind == "throttled" else (503, 0)
        start = self.server.requests()
        self.server.fail_next(status, count=10_000, retry_after=retry_after)
        try:
            yield lambda: self.server.requests() - start
        finally:
            self.server.fail_next(status, count=0)

    def client(self) -> Any:
        """A SecretClient straight to the emulator (not through the proxy)."""
        if self._client is None:
            self._client = azure_secret_client(self.server)
        return self._client

    def plant_foreign(self, ref: KeyRef, owner_uid: str | None) -> None:
        tags = {}
        if owner_uid is not None:
            tags = {"managed-by": "apikey-operator", "owner-uid": owner_uid,
                    "stage": "current", "version": "1"}
        self.client().set_secret(self.secret_name(ref), '{"key": "foreign-value"}', tags=tags)

    def snapshot(self, ref: KeyRef) -> Any:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        client = self.client()
        name = self.secret_name(ref)
        try:
            listed = list(client.list_properties_of_secret_versions(name))
        except ResourceNotFoundError:
            return None
        versions = {}
        for props in listed:
            try:
                value = client.get_secret(name, props.version).value
            except HttpResponseError as exc:
                value = f"unreadable: HTTP {exc.status_code}"
            versions[props.version] = (props.enabled, sorted((props.tags or {}).items()), value)
        return versions


def azure_secret_client(server: KeyVaultServer) -> Any:
    """A SecretClient to `server` with a managed-identity credential served by it."""
    from azure.core.credentials import AccessToken
    from azure.keyvault.secrets import SecretClient

    class EmulatorCredential:
        def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            env = server.identity_env()

            request = urllib.request.Request(
                f"{env['IDENTITY_ENDPOINT']}?resource=https://vault.azure.net&api-version=2019-08-01",
                headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                body = json.loads(response.read())
            return AccessToken(body["access_token"], int(body["expires_on"]))

    return SecretClient(server.vault_url, EmulatorCredential(), verify_challenge_resource=False,
                        connection_verify=server.ca_file)
