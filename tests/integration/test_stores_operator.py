"""The real operator with each store: Ready, rotate, revoke, and outages of the store."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from apikey_operator import metrics
from apikey_operator.client import (
    ApiKeyProvider,
    AwsSecretsManagerSource,
    AzureKeyVaultSource,
    VaultSource,
)
from apikey_operator.stores.azure import secret_name
from apikey_operator.stores.base import KeyRef
from apikey_operator.testing.harness import APIKEYS, LocalCluster
from tests.integration.helpers import apikey
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
from tests.support.store_backends import (
    AwsBackend,
    AzureBackend,
    VaultBackend,
    azure_secret_client,
)

pytestmark = pytest.mark.integration
StoreReader = Callable[[str, str], str]


@pytest.fixture(params=["vault", "aws", "azure"])
def store_under_test(request: pytest.FixtureRequest) -> tuple[str, Any, StoreReader]:
    backend = request.getfixturevalue(f"store_backend_{request.param}")

    def read_current(namespace: str, name: str) -> str:
        if isinstance(backend, VaultBackend):
            source: Any = VaultSource(client=backend.client(), mount=backend.mount,
                                      path=f"{backend.path_prefix}/{namespace}/{name}")
        elif isinstance(backend, AzureBackend):
            source = AzureKeyVaultSource(
                client=backend.client(), name=secret_name(backend.name_prefix, namespace, name))
        else:
            assert isinstance(backend, AwsBackend)
            source = AwsSecretsManagerSource(client=backend.client(),
                                             secret_id=f"{backend.name_prefix}{namespace}/{name}")
        return str(source.read())

    return request.param, backend, read_current


@pytest.fixture
def store_cluster(store_under_test: tuple[str, Any, StoreReader]) -> Iterator[LocalCluster]:
    name, backend, _ = store_under_test
    with LocalCluster(stores={name: backend.config()}) as local:
        yield local
        local.stop_operator_thread()
        leaks = local.recorder.leaks_in(local.visible_text()
                                        + generate_latest(metrics.REGISTRY).decode())
        assert not leaks, f"keys leaked: {leaks}"


def reference_client(backend: Any) -> Any:
    """The SDK client an application would pass to ApiKeyProvider.from_reference."""
    if isinstance(backend, AzureBackend):
        return azure_secret_client(backend.server)
    return backend.client()


def version(cluster: LocalCluster, name: str = "billing") -> int:
    body = cluster.apikey("payments", name) or {}
    return int(((body.get("status") or {}).get("currentKey") or {}).get("version") or 0)


def test_a_key_in_each_store_is_ready_rotates_and_revokes(
    store_cluster: LocalCluster, store_under_test: tuple[str, Any, StoreReader]
) -> None:
    store_name, backend, read_current = store_under_test
    cluster = store_cluster
    cluster.apply(apikey("billing", store=store_name, key={"prefix": "bill_"}))
    body = cluster.wait_ready("payments", "billing")
    assert body["status"]["storeRef"].startswith(f"{store_name}:")
    first = cluster.secret_data("payments", "billing")["api-key"]
    assert read_current("payments", "billing") == first
    # The reference in status is all an application needs (with a client for the store).
    provider = ApiKeyProvider.from_reference(body["status"]["storeRef"],
                                             client=reference_client(backend), ttl=0)
    assert provider.get() == first

    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "r1"})
    cluster.wait_for(lambda: version(cluster) >= 2, what="the rotation")
    data = cluster.wait_for(lambda: (d := cluster.secret_data("payments", "billing"))
                            .get("api-key-previous") == first and d, what="the projection")
    assert read_current("payments", "billing") == data["api-key"]

    cluster.annotate("payments", "billing", {"apikeys.dev/revoke": "v1"})
    cluster.wait_for(lambda: version(cluster) >= 3, what="the revoke")
    cluster.wait_for(lambda: set(cluster.secret_data("payments", "billing")) == {"api-key"},
                     what="old keys gone from the Secret")
    assert read_current("payments", "billing") == cluster.secret_data("payments",
                                                                      "billing")["api-key"]
    assert provider.get() == cluster.secret_data("payments", "billing")["api-key"]


def test_a_store_outage_is_reported_the_secret_kept_and_recovery_is_automatic(
    store_cluster: LocalCluster, store_under_test: tuple[str, Any, StoreReader]
) -> None:
    store_name, backend, read_current = store_under_test
    cluster = store_cluster
    cluster.apply(apikey("billing", store=store_name))
    cluster.wait_ready("payments", "billing")
    before = cluster.secret_data("payments", "billing")
    errors_before = _store_errors(store_name)

    with backend.proxy.outage("refuse"):
        cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "during-outage"})
        cond = cluster.wait_reason("payments", "billing", "StoreUnavailable", timeout=30)
        assert cond["status"] == "False"
        cluster.wait_for(lambda: "StoreUnavailable" in cluster.event_reasons("payments",
                                                                             "billing"),
                         what="the StoreUnavailable event")
        time.sleep(2)
        assert cluster.secret_data("payments", "billing") == before
        assert _store_errors(store_name) > errors_before
        mark = cluster.api.traffic.mark()
        time.sleep(3)
        # Backing off, not hot-looping: a handful of API writes at most in 3 s.
        assert len(cluster.api.traffic.records(since=mark)) < 10

    cluster.wait_for(lambda: version(cluster) == 2, timeout=60, what="recovery and rotation")
    cluster.wait_ready("payments", "billing", timeout=30)
    after = cluster.secret_data("payments", "billing")
    assert after["api-key-previous"] == before["api-key"]
    assert read_current("payments", "billing") == after["api-key"]


def test_delete_removes_the_store_entry_and_retain_keeps_it(
    store_cluster: LocalCluster, store_under_test: tuple[str, Any, StoreReader]
) -> None:
    store_name, backend, read_current = store_under_test
    cluster = store_cluster
    cluster.apply(apikey("gone", store=store_name, deletionPolicy="Delete"))
    cluster.apply(apikey("kept", store=store_name, deletionPolicy="Retain"))
    cluster.wait_ready("payments", "gone")
    cluster.wait_ready("payments", "kept")
    refs = {name: KeyRef("payments", name, cluster.apikey("payments", name)["metadata"]["uid"])
            for name in ("gone", "kept")}
    kept_key = cluster.secret_data("payments", "kept")["api-key"]
    assert backend.snapshot(refs["gone"]) is not None

    for name in refs:
        cluster.api.delete_object(APIKEYS, "payments", name)
    cluster.wait_for(lambda: all(cluster.apikey("payments", n) is None for n in refs),
                     what="the deletions")

    cluster.wait_for(lambda: backend.snapshot(refs["gone"]) is None, what="the entry deleted")
    assert backend.snapshot(refs["kept"]) is not None
    assert read_current("payments", "kept") == kept_key


def _store_errors(store: str) -> float:
    total = 0.0
    for family in metrics.REGISTRY.collect():
        if family.name == "apikey_store_errors":
            total += sum(s.value for s in family.samples
                         if s.labels.get("store") == store and s.name.endswith("_total"))
    return total


def test_a_vault_that_forbids_the_operator_is_reported_as_such(
    request: pytest.FixtureRequest,
) -> None:
    backend: AzureBackend = request.getfixturevalue("store_backend_azure")
    server = backend.server
    with LocalCluster(stores={"azure": backend.config()}) as cluster:
        server.deny(True)
        try:
            cluster.apply(apikey("billing", store="azure"))
            cond = cluster.wait_reason("payments", "billing", "RotationFailed", timeout=30)
            warnings = cluster.wait_for(lambda: [
                e for e in cluster.events("payments", "billing")
                if e.get("type") == "Warning" and e.get("reason") == "RotationFailed"],
                what="the RotationFailed Warning Event")
        finally:
            server.deny(False)
        assert cond["status"] == "False"
        assert "denied" in cond["message"]
        assert "secrets get, set, list and delete" in warnings[0]["message"]
        # Once the role is granted, the key is provisioned without anybody's help.
        cluster.wait_ready("payments", "billing", timeout=90)
        cluster.stop_operator_thread()
        assert cluster.leaks() == []


def test_deleting_a_key_whose_aws_entry_is_scheduled_for_deletion_completes(
    store_backend_aws: AwsBackend,  # noqa: F811 (the fixture)
) -> None:
    backend = store_backend_aws
    with LocalCluster(stores={"aws": backend.config()}) as cluster:
        cluster.apply(apikey("billing", store="aws"))
        body = cluster.wait_ready("payments", "billing")
        ref = KeyRef("payments", "billing", body["metadata"]["uid"])
        # Someone scheduled the entry for deletion (a 7-day recovery window): AWS refuses
        # every use of it until then, and the deletion must not wait for a week.
        backend.client().delete_secret(SecretId=backend.secret_name(ref),
                                       RecoveryWindowInDays=7)
        cluster.api.delete_object(APIKEYS, "payments", "billing")
        cluster.wait_for(lambda: cluster.apikey("payments", "billing") is None, timeout=30,
                         what="the ApiKey deleted")
        warning = cluster.wait_for(
            lambda: [e for e in cluster.events("payments", "billing")
                     if e["reason"] == "StoreCleanupIncomplete" and e["type"] == "Warning"],
            what="the StoreCleanupIncomplete Warning")
        assert "scheduled for deletion" in warning[0]["message"], warning[0]["message"]
        cluster.stop_operator_thread()


def test_deleting_a_key_whose_stored_version_is_corrupt_completes(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    store_secret = "ak.payments.billing"
    cluster.api.patch_object("v1/secrets", "apikey-operator", store_secret,
                             {"data": {"v1": base64.b64encode(b"{not json").decode()}})
    cluster.api.delete_object(APIKEYS, "payments", "billing")
    cluster.wait_for(lambda: cluster.apikey("payments", "billing") is None, timeout=30,
                     what="the ApiKey deleted")
    assert cluster.secret("apikey-operator", store_secret) is None
    warning = cluster.wait_for(
        lambda: [e for e in cluster.events("payments", "billing")
                 if e["reason"] == "StoreCleanupIncomplete"], what="the Warning")
    assert "malformed" in warning[0]["message"], warning[0]["message"]
