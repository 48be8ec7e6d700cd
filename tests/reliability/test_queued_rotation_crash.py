"""A queued rotation is durable: SIGKILL while it waits, and SIGKILL again as it runs, and it
still runs exactly once, after the grace it waited for, announced once."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from apikey_operator.stores.base import parse_time
from apikey_operator.testing.harness import SECRETS, LocalCluster
from apikey_operator.testing.kubeapi import KubernetesApiError
from apikey_operator.testing.process import OperatorProcess
from tests.integration.helpers import apikey, policy, store_valid_keys

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(start_operator=False) as local:
        yield local
        assert not local.leaks()


def status(cluster: LocalCluster) -> dict:  # type: ignore[type-arg]
    return dict((cluster.apikey("payments", "billing") or {}).get("status") or {})


def _valid_keys(secret: dict[str, Any]) -> dict[int, str]:
    """Version -> key the built-in store's entry holds as valid, from one of its versions."""
    book = json.loads(secret["metadata"]["annotations"]["apikeys.dev/store-state"])
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {book[p]: json.loads(data[f"v{book[p]}"])["key"]
            for p in ("current", "previous", "pending") if book.get(p) is not None}


def test_a_queued_rotation_survives_sigkill_while_waiting_and_while_running(
    cluster: LocalCluster
) -> None:
    operator = OperatorProcess(cluster.kubeconfig, cluster.workdir, name="healthy")
    operator.start()
    try:
        cluster.apply(policy("short-grace", rotateEvery="1h", gracePeriod="15s"))
        cluster.apply(apikey("billing", rotationPolicyRef={"name": "short-grace"}))
        cluster.wait_ready("payments", "billing", timeout=60)
        first = cluster.secret_data("payments", "billing")["api-key"]
        cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "r1"})
        cluster.wait_for(lambda: (status(cluster).get("currentKey") or {}).get("version") == 2,
                         timeout=30, what="version 2")
        valid_until = parse_time(status(cluster)["previousKey"]["validUntil"])
        cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "r2"})
        cluster.wait_for(lambda: status(cluster).get("queuedRotation"), timeout=30,
                         what="the queued rotation")
        # Events follow their status write (at most once: a kill in that millisecond would
        # lose one); this test is about the queued rotation, so it kills after its Event.
        cluster.wait_for(lambda: "RotationQueued" in cluster.event_reasons("payments", "billing"),
                         timeout=30, what="the RotationQueued Event")
        operator.kill()  # SIGKILL while the rotation waits
    finally:
        operator.stop()

    # The next process crashes right after it writes the queued rotation's new key. The store
    # entry's writes are watched: the server's own time of the write that revoked the first
    # key must not be earlier than the validUntil it was promised.
    writes: list[dict[str, Any]] = []
    stop = threading.Event()
    watching = threading.Event()

    def watch() -> None:
        rv = None
        while not stop.is_set():
            with contextlib.suppress(KubernetesApiError, OSError, ValueError):
                for event in cluster.api.watch(SECRETS, "apikey-operator", timeout=2,
                                               resource_version=rv, on_open=watching.set):
                    obj = event.get("object") or {}
                    rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                    if obj.get("metadata", {}).get("name") == "ak.payments.billing":
                        writes.append(obj)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert watching.wait(10)
    crashing = OperatorProcess(cluster.kubeconfig, cluster.workdir, name="crashing")
    crashing.start(env={"APIKEY_OPERATOR_CRASH_AT": "after-create"})
    assert crashing.wait_exit(60) is not None, "the crash point was never reached"
    crashing.stop()
    time.sleep(1.0)
    stop.set()
    watcher.join(10)
    revoking = next((w for w in writes if first not in _valid_keys(w).values()), None)
    assert revoking is not None, "the crashing process never revoked the first key"
    written_at = max(parse_time(f["time"].replace(".000000", "")) for f in
                     revoking["metadata"]["managedFields"] if f.get("time"))
    assert written_at >= valid_until, "the first key was revoked before its promised grace"
    assert len(_valid_keys(revoking)) == 1  # revoked first; the new pending came after

    healthy = OperatorProcess(cluster.kubeconfig, cluster.workdir, name="healthy-again")
    healthy.start()
    try:
        cluster.wait_for(lambda: (status(cluster).get("currentKey") or {}).get("version") == 3
                         and cluster.condition("payments", "billing")["status"] == "True",
                         timeout=60, what="the queued rotation finished")
        after = status(cluster)
        assert after["lastHandledRotate"] == "r2" and after.get("queuedRotation") is None
        assert list(store_valid_keys(cluster, "payments", "billing")) in ([3, 2], [2, 3])
        data = cluster.secret_data("payments", "billing")
        assert set(data.values()) == set(store_valid_keys(cluster, "payments",
                                                          "billing").values())
        reasons = cluster.wait_for(
            lambda: (r := cluster.event_reasons("payments", "billing")).count("Rotated") == 2
            and r, timeout=30, what="two Rotated Events")
        time.sleep(2.0)  # a doubled rotation would show by now
        reasons = cluster.event_reasons("payments", "billing")
        assert reasons.count("Rotated") == 2, reasons
        assert reasons.count("RotationQueued") == 1, reasons
        assert reasons.count("GraceExpired") == 1, reasons
        assert (status(cluster).get("currentKey") or {}).get("version") == 3
    finally:
        healthy.stop()
