"""Moving a key between stores on the real control plane: the built-in store and a real
OpenBao. The move is a graceful rotation; deletion finds every store the key lives in."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from apikey_operator import metrics
from apikey_operator.keys import fingerprint
from apikey_operator.testing.harness import APIKEYS, LocalCluster
from tests.integration.helpers import apikey, policy, store_valid_keys
from tests.support.faults_contract import StoreProbe
from tests.support.fixtures_stores import (  # noqa: F401 (fixtures)
    openbao_server,
    openbao_token_file,
    store_backend_vault,
)
from tests.support.store_backends import VaultBackend

pytestmark = pytest.mark.integration
OLD_ENTRY = "ak.payments.billing"


@pytest.fixture
def vault(request: pytest.FixtureRequest) -> VaultBackend:
    backend: VaultBackend = request.getfixturevalue("store_backend_vault")
    return backend


@pytest.fixture
def cluster(vault: VaultBackend) -> Iterator[LocalCluster]:
    with LocalCluster(stores={"vault": vault.config()}) as local:
        yield local
        local.stop_operator_thread()
        leaks = local.recorder.leaks_in(local.visible_text()
                                        + generate_latest(metrics.REGISTRY).decode())
        assert not leaks, f"keys leaked: {leaks}"


def status(cluster: LocalCluster) -> dict[str, Any]:
    return dict((cluster.apikey("payments", "billing") or {}).get("status") or {})


def moved(cluster: LocalCluster, grace: str, **spec: Any) -> tuple[str, str, str]:
    """Provision in the built-in store, move to OpenBao; (uid, old key, new key)."""
    cluster.apply(policy(f"move-{grace}", rotateEvery="3h", gracePeriod=grace))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": f"move-{grace}"}, **spec))
    body = cluster.wait_ready("payments", "billing")
    first = cluster.secret_data("payments", "billing")["api-key"]
    cluster.api.patch_object(APIKEYS, "payments", "billing", {"spec": {"store": "vault"}})
    cluster.wait_for(lambda: status(cluster).get("store") == "vault", what="the move")
    second = cluster.secret_data("payments", "billing")["api-key"]
    assert second != first
    return str(body["metadata"]["uid"]), first, second


def vault_keys(cluster: LocalCluster, backend: VaultBackend, uid: str) -> list[str]:
    probe = StoreProbe(cluster.api, "vault", backend.config())
    return list(probe.state("payments", "billing", uid).valid_keys().values())


def test_a_moved_key_keeps_the_old_one_valid_in_the_old_store_then_deletes_it_there(
        cluster: LocalCluster, vault: VaultBackend) -> None:
    uid, first, second = moved(cluster, "6s")
    after = status(cluster)
    assert after["formerStores"] == ["kubernetes"]
    assert after["storeRef"].startswith("vault:")
    assert after["previousKey"]["fingerprint"] == fingerprint(first)
    assert cluster.secret_data("payments", "billing") == {"api-key": second,
                                                          "api-key-previous": first}
    assert list(store_valid_keys(cluster, "payments", "billing").values()) == [first]
    assert vault_keys(cluster, vault, uid) == [second]
    # The grace ends: out of the Secret, then the built-in store's entry is deleted.
    cluster.wait_for(lambda: cluster.secret("apikey-operator", OLD_ENTRY) is None,
                     timeout=30, what="the old entry deleted")
    cluster.wait_for(lambda: not status(cluster).get("formerStores"), what="formerStores gone")
    assert cluster.secret_data("payments", "billing") == {"api-key": second}
    reasons = cluster.wait_for(
        lambda: "GraceExpired" in (r := cluster.event_reasons("payments", "billing")) and r,
        what="GraceExpired")
    assert reasons.count("Rotated") == 1


@pytest.mark.parametrize("policy_name", ["Delete", "Retain"])
def test_deleting_a_key_mid_move_follows_its_deletion_policy_in_both_stores(
        cluster: LocalCluster, vault: VaultBackend, policy_name: str) -> None:
    uid, first, second = moved(cluster, "1h", deletionPolicy=policy_name)
    assert status(cluster)["formerStores"] == ["kubernetes"]
    cluster.api.delete_object(APIKEYS, "payments", "billing")
    cluster.wait_for(lambda: cluster.apikey("payments", "billing") is None,
                     timeout=30, what="the ApiKey gone")
    if policy_name == "Delete":
        assert cluster.secret("apikey-operator", OLD_ENTRY) is None
        assert vault_keys(cluster, vault, uid) == []
    else:
        assert list(store_valid_keys(cluster, "payments", "billing").values()) == [first]
        assert vault_keys(cluster, vault, uid) == [second]


def test_a_move_to_an_unconfigured_store_is_refused_and_the_key_stays_served(
        cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    before = cluster.secret("payments", "billing")
    entry = cluster.secret("apikey-operator", OLD_ENTRY)
    assert before is not None and entry is not None
    cluster.api.patch_object(APIKEYS, "payments", "billing", {"spec": {"store": "nowhere"}})
    cond = cluster.wait_reason("payments", "billing", "InvalidSpec")
    assert cond["status"] == "False" and "key version 1 stays current" in cond["message"]
    after = cluster.secret("payments", "billing")
    assert after is not None
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    again = cluster.secret("apikey-operator", OLD_ENTRY)
    assert again is not None
    assert again["metadata"]["resourceVersion"] == entry["metadata"]["resourceVersion"]
    assert status(cluster)["store"] == "kubernetes"
