"""One permission taken out of the chart's RBAC: the operator must say so where users look.

The chart is installed with helm and the operator runs as its ServiceAccount (see
chart_release.py); then, as the admin, one rule of the release's ClusterRole (or of the Role
of a watched namespace) loses verbs. The operator must not crash and must not lose a key: the
store keeps every key it generated, the consumer keeps a working Secret. It must report the
refusal on the ApiKey (a Ready=False condition and a Warning Event naming the refused call),
and once the rule is back it must finish the work on its own: Ready again, with the keys the
store held during the outage (none generated twice).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from apikey_operator import keys
from apikey_operator.stores import StoreState
from apikey_operator.testing.harness import LocalCluster
from tests.integration.helpers import apikey
from tests.rbac.chart_release import ChartRelease, without_verbs
from tests.rbac.conftest import ChartFactory
from tests.support.faults_contract import StoreProbe

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

# Generous: after a few refusals the key's worker backs off (exponentially, with jitter).
RECOVERY = 120.0


@contextmanager
def rule_removed(release: ChartRelease, role: tuple[str, str | None, str], group: str,
                 resource: str, verbs: list[str], check: tuple[str, str, str, str]
                 ) -> Iterator[None]:
    """`verbs` out of the role's rule for group/resource until the block ends; waits until the
    authorizer applies each change (`check`: verb, resource, group, subresource)."""
    original = release.rules(*role)
    verb, check_resource, check_group, subresource = check

    def allowed() -> bool:
        return release.can_i(verb, check_resource, "payments", group=check_group,
                             subresource=subresource)

    release.set_rules(*role, without_verbs(original, group, resource, verbs))
    release.cluster.wait_for(lambda: not allowed(), 30, "the rule to be removed")
    try:
        yield
    finally:
        release.set_rules(*role, original)
        release.cluster.wait_for(allowed, 30, "the rule to be back")


def version(cluster: LocalCluster, name: str) -> int:
    body = cluster.apikey("payments", name) or {}
    return int(((body.get("status") or {}).get("currentKey") or {}).get("version") or 0)


def warnings(cluster: LocalCluster, name: str) -> list[dict[str, str]]:
    return [{"reason": str(e.get("reason")), "message": str(e.get("message"))}
            for e in cluster.events("payments", name) if e.get("type") == "Warning"]


def test_refused_secret_writes_are_reported_no_key_is_lost_and_it_recovers(
        chart: ChartFactory, rbac_mode: str, cluster: LocalCluster) -> None:
    release = chart(rbac_mode)
    probe = StoreProbe(cluster.api, "kubernetes")
    operator = release.start_operator()
    cluster.apply(apikey("existing"))
    cluster.wait_ready("payments", "existing", timeout=60)
    old = cluster.secret_data("payments", "existing")["api-key"]
    existing_uid = cluster.apikey("payments", "existing")["metadata"]["uid"]  # type: ignore[index]

    role = release.tenant_role()
    # The Secrets rule keeps get/list/watch (the watch stays up); it loses every write.
    with rule_removed(release, role, "", "secrets", ["create", "update", "patch", "delete"],
                      ("create", "secrets", "", "")):
        cluster.apply(apikey("fresh"))
        cluster.annotate("payments", "existing", {"apikeys.dev/rotate": "during-403"})

        for name, call in (("fresh", "creating Secret payments/fresh"),
                           ("existing", "updating Secret payments/existing")):
            cond = cluster.wait_reason("payments", name, "RotationFailed", timeout=60)
            assert cond["status"] == "False", cond
            assert call in cond["message"] and "403" in cond["message"], cond
            cluster.wait_for(lambda n=name, c=call: any(  # type: ignore[misc]
                w["reason"] == "RotationFailed" and c in w["message"] and "403" in w["message"]
                for w in warnings(cluster, n)), 30, f"the Warning Event on {name}")

        # No key lost: the store holds what the operator generated; the consumer keeps the
        # key it has, and nothing was half-written into the Secret.
        fresh_uid = cluster.apikey("payments", "fresh")["metadata"]["uid"]  # type: ignore[index]
        fresh_state = probe.state("payments", "fresh", fresh_uid)
        assert fresh_state.current is not None, "the fresh key is not in the store"
        held_fresh = fresh_state.current.key

        def pending() -> StoreState | None:
            state = probe.state("payments", "existing", existing_uid)
            return state if state.pending is not None else None

        existing_state = cluster.wait_for(pending, 30, "the rotation's new key in the store")
        assert existing_state.current is not None and existing_state.current.key == old
        assert existing_state.pending is not None
        held_new = existing_state.pending.key
        assert cluster.secret("payments", "fresh") is None
        assert cluster.secret_data("payments", "existing") == {"api-key": old}
        assert operator.alive, operator.logs()[-3000:]
        assert release.forbidden_requests(), "the API server refused nothing: no rule removed?"

    # Recovery, with nothing done twice: the keys the store held are the ones projected.
    cluster.wait_ready("payments", "fresh", timeout=RECOVERY)
    assert cluster.secret_data("payments", "fresh") == {"api-key": held_fresh}
    cluster.wait_for(lambda: version(cluster, "existing") == 2, RECOVERY, "the rotation")
    cluster.wait_ready("payments", "existing", timeout=RECOVERY)
    assert cluster.secret_data("payments", "existing") == {"api-key": held_new,
                                                           "api-key-previous": old}
    assert version(cluster, "fresh") == 1
    status = cluster.apikey("payments", "existing")["status"]  # type: ignore[index]
    assert status["currentKey"]["fingerprint"] == keys.fingerprint(held_new)
    assert status["lastHandledRotate"] == "during-403"
    assert operator.alive and operator.starts == 1


@contextmanager
def status_refused(release: ChartRelease) -> Iterator[None]:
    """The cluster-wide release without patch/update on apikeys/status."""
    with rule_removed(release, release.tenant_role(), "apikeys.dev",
                      "apikeys/status", ["patch", "update"],
                      ("patch", "apikeys", "apikeys.dev", "status")):
        yield


def test_refused_status_writes_lose_no_key_and_the_status_catches_up(
        chart: ChartFactory, cluster: LocalCluster) -> None:
    """The operator cannot write status: the work itself goes on, and the status is right
    again as soon as it may write it."""
    release = chart("cluster-wide")
    operator = release.start_operator()
    cluster.apply(apikey("existing"))
    cluster.wait_ready("payments", "existing", timeout=60)
    old = cluster.secret_data("payments", "existing")["api-key"]
    with status_refused(release):
        cluster.annotate("payments", "existing", {"apikeys.dev/rotate": "during-403"})
        rotated = cluster.wait_for(
            lambda: (d := cluster.secret_data("payments", "existing"))
            .get("api-key-previous") == old and d, 60, "the rotation in the Secret")
        cluster.wait_for(lambda: release.forbidden_requests(), 30, "a refused status write")
        assert operator.alive, operator.logs()[-3000:]
    cluster.wait_for(lambda: version(cluster, "existing") == 2, RECOVERY, "the status to catch up")
    status = cluster.wait_ready("payments", "existing", timeout=RECOVERY)["status"]
    assert status["currentKey"]["fingerprint"] == keys.fingerprint(rotated["api-key"])
    assert status["lastHandledRotate"] == "during-403"
    # The rotation is announced once its status is written (the Event follows the status).
    cluster.wait_for(lambda: "Rotated" in cluster.event_reasons("payments", "existing"), 30,
                     "the Rotated Event once the status says so")
    time.sleep(1.0)
    assert cluster.event_reasons("payments", "existing").count("Rotated") == 1
    assert operator.alive and operator.starts == 1


def test_a_refused_status_write_is_reported_as_a_warning_event(
        chart: ChartFactory, cluster: LocalCluster) -> None:
    """With status unwritable the only place left on the ApiKey is its Events: a Warning
    naming the refused status update must be there."""
    release = chart("cluster-wide")
    release.start_operator()
    cluster.apply(apikey("existing"))
    cluster.wait_ready("payments", "existing", timeout=60)
    with status_refused(release):
        cluster.annotate("payments", "existing", {"apikeys.dev/rotate": "during-403"})
        cluster.wait_for(lambda: release.forbidden_requests(), 60, "a refused status write")
        cluster.wait_for(lambda: any(
            "status" in w["message"] and "403" in w["message"]
            for w in warnings(cluster, "existing")), 30,
            "a Warning Event about the refused status update")
