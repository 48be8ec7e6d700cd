"""Store config validation, path derivation and error mapping (no servers)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import botocore.exceptions
import hvac.exceptions
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from apikey_operator.stores import factory_for
from apikey_operator.stores.aws import (
    AwsSecretsManagerStore,
    decode_tag_value,
    encode_tag_value,
    version_id,
)
from apikey_operator.stores.aws import _classify as aws_classify
from apikey_operator.stores.aws import parse_config as parse_aws
from apikey_operator.stores.base import (
    KeyRef,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from apikey_operator.stores.blocking import BlockingRunner
from apikey_operator.stores.vault import VaultStore
from apikey_operator.stores.vault import _classify as vault_classify
from apikey_operator.stores.vault import parse_config as parse_vault
from tests.stores.conftest import GRACE_END, new_doc, new_ref
from tests.support.counting_store import CountingStore

pytestmark = pytest.mark.unit


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("s.dummy\n")
    return path


def vault_block(token_file: Path, **fields: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "vault",
        "address": "https://vault.example:8200",
        "auth": {"method": "token", "tokenFile": str(token_file)},
    }
    block.update(fields)
    return {k: v for k, v in block.items() if v is not ...}


def config_error(parse: Any, block: dict[str, Any]) -> str:
    with pytest.raises(StoreConfigError) as caught:
        parse("corp", block)
    return str(caught.value)


# -- vault --------------------------------------------------------------------------------


def test_a_minimal_vault_block_gets_the_documented_defaults(token_file: Path) -> None:
    config = parse_vault("corp", vault_block(token_file))

    assert config.address == "https://vault.example:8200"
    assert (config.mount, config.path_prefix) == ("secret", "apikeys")
    assert (config.ca_file, config.skip_verify) == (None, False)
    assert config.timeout == 10 and config.max_concurrency == 8
    assert config.vault_namespace is None
    assert config.auth.method == "token" and config.auth.token_file == str(token_file)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"address": ...}, "address: is required"),
        ({"address": "vault.example:8200"}, "address: 'vault.example:8200' is not valid"),
        ({"auth": ...}, "auth: is required"),
        ({"auth": {"method": "ldap"}}, "auth.method: unknown auth method 'ldap'"),
        ({"auth": {"method": "token"}}, "auth.tokenFile: is required"),
        ({"auth": {"method": "token", "tokenFile": "/nonexistent/token"}},
         "auth.tokenFile: cannot read /nonexistent/token"),
        ({"auth": {"method": "approle", "secretIdFile": "/nonexistent/s"}},
         "auth.roleId: is required"),
        ({"auth": {"method": "kubernetes", "jwtFile": "/nonexistent/jwt"}},
         "auth.role: is required"),
        ({"mount": "../sys"}, "mount: '../sys' is not valid"),
        ({"pathPrefix": "keys/./x"}, "pathPrefix: 'keys/./x' is not valid"),
        ({"pathPrefix": "a//b"}, "pathPrefix: 'a//b' is not valid"),
        ({"timeoutSeconds": 0}, "timeoutSeconds: must be between"),
        ({"maxConcurrency": "8"}, "maxConcurrency: must be an integer"),
        ({"tls": {"caFile": "/nonexistent/ca.pem"}}, "tls.caFile: cannot read"),
        ({"tls": {"skipVerify": "yes"}}, "tls.skipVerify: must be true or false"),
        ({"adress": "https://typo"}, "adress: is not a known field"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_bad_vault_field_is_named_in_the_error(
    token_file: Path, fields: dict[str, Any], message: str
) -> None:
    assert message in config_error(parse_vault, vault_block(token_file, **fields))


def test_every_bad_vault_field_is_reported_at_once(token_file: Path) -> None:
    text = config_error(parse_vault, {"type": "vault", "auth": {"method": "nope"},
                                      "timeoutSeconds": -1})

    assert text.startswith("store 'corp' is misconfigured")
    assert "address: is required" in text
    assert "auth.method: unknown auth method 'nope'" in text
    assert "timeoutSeconds" in text


def test_vault_auth_methods_get_their_defaults(token_file: Path) -> None:
    kube = parse_vault("corp", vault_block(
        token_file, auth={"method": "kubernetes", "role": "op", "jwtFile": str(token_file)}))
    approle = parse_vault("corp", vault_block(
        token_file, auth={"method": "approle", "roleId": "r", "secretIdFile": str(token_file)}))

    assert (kube.auth.role, kube.auth.mount_path) == ("op", "kubernetes")
    assert (approle.auth.role_id, approle.auth.mount_path) == ("r", "approle")


def test_the_vault_factory_raises_config_errors(token_file: Path) -> None:
    with pytest.raises(StoreConfigError, match="address"):
        factory_for("vault")("corp", {"type": "vault", "auth": {
            "method": "token", "tokenFile": str(token_file)}}, "ns")


# -- aws ----------------------------------------------------------------------------------


def test_a_minimal_aws_block_gets_the_documented_defaults() -> None:
    config = parse_aws("aws", {"type": "aws-secrets-manager", "region": "eu-west-1"})

    assert config.region == "eu-west-1" and config.name_prefix == "apikeys/"
    assert config.endpoint_url is None and config.kms_key_id is None
    assert config.timeout == 10 and config.max_concurrency == 8


@pytest.mark.parametrize("region", ["eu-west-1", "us-gov-west-1", "cn-north-1", "eusc-de-east-1"])
def test_every_region_shape_is_accepted(region: str) -> None:
    assert parse_aws("aws", {"type": "aws-secrets-manager", "region": region}).region == region


def test_null_optional_aws_fields_count_as_absent() -> None:
    config = parse_aws("aws", {"type": "aws-secrets-manager", "region": "us-gov-west-1",
                               "endpointUrl": None, "kmsKeyId": None})

    assert config.endpoint_url is None and config.kms_key_id is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "region: is required"),
        ({"region": "Europe"}, "region: 'Europe' is not valid"),
        ({"region": "eu-west-1", "namePrefix": "api keys/"}, "namePrefix: 'api keys/' is not"),
        ({"region": "eu-west-1", "endpointUrl": "localhost:5000"}, "endpointUrl: 'localhost:5000'"),
        ({"region": "eu-west-1", "timeoutSeconds": 1000}, "timeoutSeconds: must be between"),
        ({"region": "eu-west-1", "secretKey": "x"}, "secretKey: is not a known field"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_bad_aws_field_is_named_in_the_error(fields: dict[str, Any], message: str) -> None:
    assert message in config_error(parse_aws, {"type": "aws-secrets-manager", **fields})


# -- derived paths ------------------------------------------------------------------------


def vault_store(token_file: Path, **fields: Any) -> VaultStore:
    store = factory_for("vault")("corp", vault_block(token_file, **fields), "ns")
    assert isinstance(store, VaultStore)
    return store


def aws_store(**fields: Any) -> AwsSecretsManagerStore:
    block = {"type": "aws-secrets-manager", "region": "eu-west-1", **fields}
    store = factory_for("aws-secrets-manager")("aws", block, "ns")
    assert isinstance(store, AwsSecretsManagerStore)
    return store


def test_locations_follow_the_documented_layouts(token_file: Path) -> None:
    ref = KeyRef("payments", "billing-client", "uid")

    # storeRef starts with the store's type, not its name in the operator config ("corp"
    # here), so that a consumer can build a source from it.
    assert vault_store(token_file).location(ref) == "vault:secret/apikeys/payments/billing-client"
    assert vault_store(token_file, mount="kv", pathPrefix="teams/keys").location(ref) == (
        "vault:kv/teams/keys/payments/billing-client")
    assert vault_store(token_file, mount="team/kv").location(ref) == (
        "vault:team/kv/apikeys/payments/billing-client?mount=team/kv")
    assert aws_store().location(ref) == "aws:apikeys/payments/billing-client?region=eu-west-1"
    assert aws_store().secret_name(ref) == "apikeys/payments/billing-client"
    assert aws_store(namePrefix="prod-").secret_name(ref) == "prod-payments/billing-client"


@given(namespace=st.text(max_size=70), name=st.text(max_size=260))
def test_no_name_escapes_its_path(namespace: str, name: str) -> None:
    ref = KeyRef(namespace, name, "uid")
    store = aws_store()
    try:
        secret = store.secret_name(ref)
    except StoreError:
        return
    assert secret.split("/") == ["apikeys", namespace, name]
    assert ".." not in secret and "//" not in secret


# -- AWS encodings ------------------------------------------------------------------------


@given(st.text(max_size=100))
def test_tag_values_round_trip(token: str) -> None:
    encoded = encode_tag_value(token)
    assert decode_tag_value(encoded) == token


def test_plain_tokens_are_stored_verbatim_and_version_ids_are_stable() -> None:
    assert encode_tag_value("2026-05-01T10:00") == "2026-05-01T10:00"
    assert encode_tag_value("b64:looks-encoded") != "b64:looks-encoded"
    assert version_id("uid-1", 3) == version_id("uid-1", 3)
    assert version_id("uid-1", 3) != version_id("uid-2", 3)
    assert 32 <= len(version_id("uid-1", 3)) <= 64


async def test_tokens_too_long_for_the_backend_are_refused(token_file: Path) -> None:
    document = new_doc(1, handles={"rotate": "x" * 600})

    with pytest.raises(StoreError, match="hash it first"):
        await aws_store().write_pending(new_ref(), document)
    with pytest.raises(StoreError, match="hash it first"):
        await vault_store(token_file).write_pending(new_ref(), document)


async def test_an_entry_needs_the_apikey_uid(token_file: Path) -> None:
    for store in (aws_store(), vault_store(token_file)):
        with pytest.raises(StoreError, match="uid"):
            await store.write_pending(KeyRef("ns", "name", ""), new_doc(1))


# -- error mapping ------------------------------------------------------------------------


SECRET_LOOKING = "bill_" + "A" * 40


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (hvac.exceptions.VaultDown("sealed", errors=["Vault is sealed"]), True),
        (hvac.exceptions.RateLimitExceeded(errors=["rate limited"]), True),
        (hvac.exceptions.InternalServerError(errors=["boom"]), True),
        (hvac.exceptions.BadGateway(), True),
        (requests.ConnectionError("refused"), True),
        (requests.ReadTimeout("slow"), True),
        (hvac.exceptions.Forbidden(errors=["permission denied"]), False),
        (hvac.exceptions.InvalidRequest(errors=["bad request"]), False),
    ],
    ids=lambda v: type(v).__name__,
)
def test_vault_errors_map_to_store_errors(error: Exception, transient: bool) -> None:
    error.args = (f"response body {SECRET_LOOKING}",)
    mapped = vault_classify("corp")(error, "read")

    assert mapped is not None
    assert isinstance(mapped, StoreUnavailable) is transient
    assert SECRET_LOOKING not in str(mapped)
    assert str(mapped).startswith("store 'corp': read")


def client_error(code: str, status: int, message: str = "") -> botocore.exceptions.ClientError:
    response: Any = {"Error": {"Code": code, "Message": message},
                     "ResponseMetadata": {"HTTPStatusCode": status}}
    return botocore.exceptions.ClientError(response, "GetSecretValue")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error("ThrottlingException", 400, "Rate exceeded"), True),
        (client_error("InternalServiceError", 500), True),
        (client_error("ServiceUnavailable", 503), True),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), True),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), True),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"), True),
        (client_error("AccessDeniedException", 400, "not allowed"), False),
        (client_error("ValidationException", 400, "bad"), False),
        (botocore.exceptions.NoCredentialsError(), False),
    ],
    ids=lambda v: (v.response["Error"]["Code"]
                   if isinstance(v, botocore.exceptions.ClientError) else type(v).__name__),
)
def test_aws_errors_map_to_store_errors(error: Exception, transient: bool) -> None:
    mapped = aws_classify("aws")(error, "promote")

    assert mapped is not None
    assert isinstance(mapped, StoreUnavailable) is transient
    assert str(mapped).startswith("store 'aws': promote")


def test_throttling_carries_a_retry_hint() -> None:
    mapped = aws_classify("aws")(client_error("ThrottlingException", 400), "read")
    assert isinstance(mapped, StoreUnavailable) and mapped.retry_after


async def test_the_runner_bounds_time_and_hides_unknown_error_messages() -> None:
    runner = BlockingRunner("s", lambda exc, op: None, max_concurrency=2, timeout=0.2)
    release = asyncio.Event()

    def stuck(deadline: Any) -> None:
        while not release.is_set():
            deadline.remaining()

    def leaky(deadline: Any) -> None:
        raise ValueError(SECRET_LOOKING)

    try:
        with pytest.raises(StoreUnavailable, match=r"timed out after 0\.2s"):
            await runner.run("read", stuck)
        with pytest.raises(StoreError) as caught:
            await runner.run("read", leaky)
        assert SECRET_LOOKING not in str(caught.value)
        assert "ValueError" in str(caught.value)
    finally:
        release.set()
        runner.close()


# -- the counting wrapper -----------------------------------------------------------------


class _MemoryStore:
    type_name: ClassVar[str] = "memory"
    name = "memory"

    def location(self, ref: KeyRef) -> str:
        return f"memory:{ref.namespace}/{ref.name}"

    async def read(self, ref: KeyRef) -> Any:
        from apikey_operator.stores.base import StoreState

        return StoreState()

    async def write_pending(self, ref: KeyRef, document: Any) -> Any:
        return document

    async def promote(self, ref: KeyRef, version: int, previous_valid_until: Any) -> None:
        return None

    async def revoke(self, ref: KeyRef, version: int) -> None:
        return None

    async def delete(self, ref: KeyRef) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_the_counting_store_counts_and_injects_failures() -> None:
    store = CountingStore(_MemoryStore())
    ref = new_ref()
    store.fail_next("promote", StoreUnavailable("down"))

    await store.read(ref)
    await store.read(ref)
    await store.write_pending(ref, new_doc(1))
    with pytest.raises(StoreUnavailable):
        await store.promote(ref, 1, GRACE_END)
    await store.promote(ref, 1, GRACE_END)

    assert store.calls == {"read": 2, "write_pending": 1, "promote": 2}
    assert store.errors == {"promote": 1}
    assert store.total == 5
    assert store.location(ref) == f"memory:{ref.namespace}/{ref.name}"


async def test_the_runner_never_runs_more_than_max_concurrency_at_once() -> None:
    runner = BlockingRunner("s", lambda exc, op: None, max_concurrency=3, timeout=5)
    lock = threading.Lock()
    running, peak = 0, 0

    def work(deadline: Any) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    try:
        await asyncio.gather(*(runner.run("read", work) for _ in range(12)))
    finally:
        runner.close()
    assert peak == 3
