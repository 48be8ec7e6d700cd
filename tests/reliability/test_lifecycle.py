"""An ApiKey deleted before its finalizer lands, or deleted and created again under its name
(issue 18, finding 1): no worker outlives its object, nothing live is left behind, and no write
meant for the old object lands on the new one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from apikey_operator import keys
from apikey_operator.kube import status_patch
from apikey_operator.testing.harness import APIKEYS, SECRETS, LocalCluster
from tests.integration.helpers import apikey

pytestmark = pytest.mark.integration

PAIRS = 1000  # the issue's own figure

@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster() as local:
        yield local
        local.stop_operator_thread()
        assert not local.leaks()

def _settled(cluster: LocalCluster) -> bool:
    assert cluster.operator is not None and cluster.operator.operator is not None
    return (not cluster.operator.operator.workers
            and cluster.api.list_objects(SECRETS, "payments") == []
            and cluster.api.list_objects(SECRETS, "apikey-operator") == [])

def test_create_then_delete_leaves_no_worker_key_or_traffic(cluster: LocalCluster) -> None:
    for i in range(PAIRS):
        cluster.apply(apikey(f"flash-{i:03d}"))
        cluster.api.delete_object(APIKEYS, "payments", f"flash-{i:03d}")
    cluster.wait_for(lambda: cluster.api.list_objects(APIKEYS, "payments") == [],
                     timeout=60, what="every ApiKey gone")
    cluster.wait_for(lambda: _settled(cluster), timeout=60,
                     what="no worker, no consumer Secret and no store entry left")
    mark = cluster.api.traffic.mark()
    time.sleep(5.0)  # an idle window: a leftover worker would retry or restore within it
    assert cluster.api.traffic.records(since=mark) == []
    assert _settled(cluster)

def test_a_recreated_apikey_is_never_written_with_the_old_ones_state(
        cluster: LocalCluster) -> None:
    for round_ in range(5):
        cluster.apply(apikey("reborn"))
        cluster.api.delete_object(APIKEYS, "payments", "reborn")
        cluster.wait_for(lambda: cluster.apikey("payments", "reborn") is None,
                         what="the first object gone")
        created = cluster.apply(apikey("reborn"))
        uid = created["metadata"]["uid"]
        body = cluster.wait_ready("payments", "reborn", timeout=30)
        assert body["metadata"]["uid"] == uid
        secret = cluster.secret("payments", "reborn") or {}
        owners = [o["uid"] for o in secret["metadata"].get("ownerReferences") or []]
        assert owners == [uid], f"round {round_}: the Secret belongs to {owners}, not {uid}"
        data = cluster.secret_data("payments", "reborn")
        assert keys.fingerprint(data["api-key"]) == body["status"]["currentKey"]["fingerprint"]
        # A revoke on the new object is acted on (it used to be dropped silently).
        token = f"r{round_}"
        cluster.annotate("payments", "reborn", {"apikeys.dev/revoke": token})
        cluster.wait_for(lambda t=token: ((cluster.apikey("payments", "reborn") or {})  # type: ignore[misc]
                                          .get("status") or {}).get("lastHandledRevoke") == t,
                         timeout=30, what="the revoke on the new object")
        cluster.api.delete_object(APIKEYS, "payments", "reborn")
        cluster.wait_for(lambda: _settled(cluster), timeout=30, what="cleanup")

def test_a_status_write_for_another_uid_is_refused_by_the_server(
        cluster: LocalCluster) -> None:
    created = cluster.apply(apikey("guarded"))
    cluster.wait_ready("payments", "guarded")
    path = cluster.api.path(APIKEYS, "payments", "guarded", "status")
    from apikey_operator.testing.kubeapi import KubernetesApiError

    stale = status_patch({"storeRef": "kubernetes:forged"}, "another-uid", True)
    with pytest.raises(KubernetesApiError) as caught:
        cluster.api.request("PATCH", path, stale, content_type="application/json-patch+json")
    assert caught.value.status == 422
    body = cluster.apikey("payments", "guarded") or {}
    assert body["status"]["storeRef"] != "kubernetes:forged"
    own = status_patch({"storeRef": body["status"]["storeRef"]}, created["metadata"]["uid"],
                       True)
    cluster.api.request("PATCH", path, own, content_type="application/json-patch+json")

def test_a_status_write_from_an_older_version_is_refused_by_the_server(
        cluster: LocalCluster) -> None:
    """The operator's own client against kube-apiserver: a write conditional on a version the
    object has moved past is KubeStale (not a 422 "gone"), the current version is accepted."""
    import asyncio

    from apikey_operator.kube import KubeClient, KubeStale

    created = cluster.apply(apikey("versioned"))
    cluster.wait_ready("payments", "versioned")
    uid = created["metadata"]["uid"]
    old_version = created["metadata"]["resourceVersion"]

    async def attempt(version: str) -> str:
        kube = KubeClient()
        try:
            return await kube.patch_apikey_status("payments", "versioned",
                                                  {"storeRef": "kubernetes:x"}, uid=uid,
                                                  has_status=True, resource_version=version)
        finally:
            await kube.close()

    with pytest.raises(KubeStale):
        asyncio.run(attempt(old_version))
    assert (cluster.apikey("payments", "versioned") or {})["status"]["storeRef"] != "kubernetes:x"
    current = (cluster.apikey("payments", "versioned") or {})["metadata"]["resourceVersion"]
    assert asyncio.run(attempt(current)) not in ("", current)

@pytest.mark.unit
def test_the_status_patch_tests_the_uid_first_and_removes_unconditionally() -> None:
    ops = status_patch({"a": 1, "gone": None, "x/y": "v"}, "uid-1", True)
    assert ops[0] == {"op": "test", "path": "/metadata/uid", "value": "uid-1"}
    assert {"op": "add", "path": "/status/a", "value": 1} in ops
    assert ops[2:4] == [{"op": "add", "path": "/status/gone", "value": 0},
                        {"op": "remove", "path": "/status/gone"}]
    assert {"op": "add", "path": "/status/x~1y", "value": "v"} in ops
    first = status_patch({"a": 1, "gone": None}, "uid-1", False)
    assert first[1] == {"op": "add", "path": "/status", "value": {"a": 1}}

@pytest.mark.parametrize("blocker", ["consumer-secret", "store-entry"])
def test_a_conflict_clears_soon_after_the_blocker_goes(cluster: LocalCluster,
                                                       blocker: str) -> None:
    """Issue 18, finding 3: neither Secret below carries our label, so no watch event of ours
    reports its removal (`kubectl replace --force`, a GitOps re-create); the key still
    recovers within seconds."""
    namespace, name = ("payments", "taken") if blocker == "consumer-secret" else (
        "apikey-operator", "ak.payments.taken")
    cluster.api.create_object({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                               "metadata": {"name": name, "namespace": namespace},
                               "data": {"api-key": "c29tZW9uZSBlbHNlJ3M="}})
    cluster.apply(apikey("taken"))
    reason = "SecretConflict" if blocker == "consumer-secret" else "StoreConflict"
    cluster.wait_reason("payments", "taken", reason)
    time.sleep(3.0)  # let the retry backoff grow past its first step
    cluster.api.delete_object(SECRETS, namespace, name)
    cluster.wait_ready("payments", "taken", timeout=30)
