"""The operator run as the chart's ServiceAccount does its whole job with exactly the chart's RBAC.

Each test installs the chart with helm (cluster-wide and per-namespace), runs `apikey-operator
run` with the release's ConfigMap and Deployment flags and a TokenRequest token of the
release's ServiceAccount, and goes through a part of the operator's work. The API server
authorizes every request with the rules the chart rendered; at the end no request may have
been refused (the proxy records every answer) and no operator log line may mention a 403.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from apikey_operator.testing.harness import APIKEYS, SECRETS, LocalCluster
from tests.integration.helpers import apikey, policy
from tests.rbac.chart_release import (
    CLUSTER_PEERINGS,
    CLUSTER_ROLES,
    NAMESPACE,
    PEERINGS,
    ROLES,
    ChartRelease,
)
from tests.rbac.conftest import OUTSIDE, WATCHED, ChartFactory, stores_values
from tests.reliability.conftest import store_config_for
from tests.support.faults_contract import StoreProbe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DEPLOYMENTS = "apps/v1/deployments"


def assert_no_forbidden(release: ChartRelease) -> None:
    refused = release.forbidden_requests()
    assert refused == [], f"the API server refused the chart's ServiceAccount: {refused[:10]}"
    lines = release.forbidden_lines()
    assert lines == [], "the operator logged refusals:\n" + "\n".join(lines[:10])
    for process in release.processes:
        assert process.alive, f"{process.log_path.name} exited: {process.logs()[-3000:]}"


def version(cluster: LocalCluster, namespace: str, name: str) -> int:
    body = cluster.apikey(namespace, name) or {}
    return int(((body.get("status") or {}).get("currentKey") or {}).get("version") or 0)


def uid(cluster: LocalCluster, namespace: str, name: str) -> str:
    body = cluster.apikey(namespace, name)
    assert body is not None, f"no ApiKey {namespace}/{name}"
    return str(body["metadata"]["uid"])


def wait_event(cluster: LocalCluster, namespace: str, name: str, reason: str,
               timeout: float = 30.0) -> None:
    cluster.wait_for(lambda: reason in cluster.event_reasons(namespace, name), timeout,
                     f"a {reason} Event on {namespace}/{name}")


# --- the release itself ----------------------------------------------------------------------


def test_the_release_grants_what_its_mode_says(chart: ChartFactory, rbac_mode: str) -> None:
    """The fixture installed the mode it claims: checked with the API server's authorizer."""
    release = chart(rbac_mode)
    assert release.username == f"system:serviceaccount:{NAMESPACE}:{release.service_account}"
    args = release.chart_args()
    assert "--standalone" in args
    kinds = {(resource, ns) for resource, ns, _ in release.role_objects()}
    if rbac_mode == "cluster-wide":
        assert "--all-namespaces" in args and not any(a.startswith("--namespace") for a in args)
        assert kinds == {(CLUSTER_ROLES, None), (ROLES, NAMESPACE)}
    else:
        assert sorted(a for a in args if a.startswith("--namespace=")) == [
            f"--namespace={ns}" for ns in sorted(WATCHED)]
        assert kinds == {(CLUSTER_ROLES, None), (ROLES, NAMESPACE),
                         *((ROLES, ns) for ns in WATCHED)}
    for ns in WATCHED:
        assert release.can_i("create", "secrets", ns)
        assert release.can_i("patch", "apikeys", ns, group="apikeys.dev", subresource="status")
        assert release.can_i("patch", "deployments", ns, group="apps")
    # The built-in store's Secrets, in the release namespace, whatever the mode.
    assert release.can_i("create", "secrets", NAMESPACE)
    assert release.can_i("watch", "rotationpolicies", group="apikeys.dev")
    # Least privilege: never a wildcard, never more than the operator uses.
    assert not release.can_i("create", "apikeys", WATCHED[0], group="apikeys.dev")
    assert not release.can_i("get", "configmaps", WATCHED[0])
    assert not release.can_i("create", "rotationpolicies", group="apikeys.dev")
    outside = release.can_i("get", "secrets", OUTSIDE)
    assert outside is (rbac_mode == "cluster-wide"), f"secrets in {OUTSIDE}: {outside}"


# --- the representative suite, as the chart's ServiceAccount ---------------------------------


@pytest.mark.slow
def test_lifecycle_as_the_chart_service_account(chart: ChartFactory, rbac_mode: str,
                                                cluster: LocalCluster) -> None:
    """Provision, rotate with grace (+ restart target), grace end, revoke, drift repair,
    deletion: the built-in store, one standalone operator."""
    release = chart(rbac_mode)
    probe = StoreProbe(cluster.api, "kubernetes")
    cluster.api.create_object({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "billing-api", "namespace": "payments"},
        "spec": {"selector": {"matchLabels": {"app": "billing"}},
                 "template": {"metadata": {"labels": {"app": "billing"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    cluster.apply(policy("short-grace", rotateEvery="1h", gracePeriod="4s"))
    cluster.apply(apikey("billing", key={"prefix": "bill_"},
                         rotationPolicyRef={"name": "short-grace"},
                         restartTargets=[{"kind": "Deployment", "name": "billing-api"}]))
    cluster.apply(apikey("reports", namespace="team-a"))
    release.start_operator()

    # Provisioning: Ready, the Secret holds the store's current key.
    body = cluster.wait_ready("payments", "billing", timeout=60)
    assert body["status"]["storeRef"] == "kubernetes:apikey-operator/ak.payments.billing"
    first = cluster.secret_data("payments", "billing")["api-key"]
    assert first.startswith("bill_")
    billing_uid = uid(cluster, "payments", "billing")
    assert probe.state("payments", "billing", billing_uid).valid_keys() == {1: first}
    wait_event(cluster, "payments", "billing", "Provisioned")
    cluster.wait_ready("team-a", "reports", timeout=30)
    assert cluster.secret_data("team-a", "reports")["api-key"]

    def template_annotations() -> dict[str, str]:
        obj = cluster.api.get_object(DEPLOYMENTS, "payments", "billing-api") or {}
        return dict(obj["spec"]["template"]["metadata"].get("annotations") or {})

    assert template_annotations() == {}, "provisioning must not restart anything"

    # Rotation with grace: the old key stays next to the new one, the Deployment rolls.
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "r1"})
    cluster.wait_for(lambda: version(cluster, "payments", "billing") == 2, 30, "version 2")
    data = cluster.wait_for(lambda: (d := cluster.secret_data("payments", "billing"))
                            .get("api-key-previous") == first and d, 30, "the grace projection")
    second = data["api-key"]
    assert second != first
    restart = cluster.wait_for(template_annotations, 30, "the restart annotation")
    assert list(restart.values()) != [], restart
    wait_event(cluster, "payments", "billing", "RestartTriggered")
    wait_event(cluster, "payments", "billing", "Rotated")
    # The grace ends: out of the Secret, then revoked in the store.
    cluster.wait_for(lambda: set(cluster.secret_data("payments", "billing")) == {"api-key"},
                     30, "the grace to end")
    cluster.wait_for(lambda: first not in probe.state("payments", "billing", billing_uid)
                     .valid_keys().values(), 30, "the old key revoked in the store")
    wait_event(cluster, "payments", "billing", "GraceExpired")

    # Revoke: the current key is replaced at once, with no grace.
    cluster.annotate("payments", "billing", {"apikeys.dev/revoke": "incident-1"})
    cluster.wait_for(lambda: version(cluster, "payments", "billing") == 3, 30, "version 3")
    third = cluster.wait_for(lambda: (k := cluster.secret_data("payments", "billing")
                                      .get("api-key")) != second and k, 30, "the revoke")
    assert set(cluster.secret_data("payments", "billing")) == {"api-key"}
    cluster.wait_for(lambda: probe.state("payments", "billing", billing_uid).valid_keys()
                     == {3: third}, 30, "only version 3 in the store")
    wait_event(cluster, "payments", "billing", "Revoked")

    # Drift repair: the consumer Secret deleted by hand comes back with the same key.
    cluster.api.delete_object(SECRETS, "payments", "billing")
    cluster.wait_for(lambda: cluster.secret_data("payments", "billing").get("api-key") == third,
                     30, "the Secret restored")
    wait_event(cluster, "payments", "billing", "SecretRestored")
    assert version(cluster, "payments", "billing") == 3

    # Deletion: the finalizer deletes the store entry; the Secret goes with its owner.
    cluster.api.delete_object(APIKEYS, "payments", "billing")
    cluster.wait_for(lambda: cluster.apikey("payments", "billing") is None, 30,
                     "the ApiKey gone (finalizer released)")
    cluster.wait_for(lambda: not probe.state("payments", "billing", billing_uid).exists, 30,
                     "the store entry deleted")
    cluster.wait_for(lambda: cluster.secret("payments", "billing") is None, 30,
                     "the consumer Secret garbage-collected")

    if rbac_mode == "per-namespace":
        # Outside its namespaces the release neither can nor does touch anything.
        cluster.apply(apikey("stray", namespace=OUTSIDE))
        cluster.wait_ready("team-a", "reports")  # the operator is still working
        time.sleep(3)
        stray = cluster.apikey(OUTSIDE, "stray") or {}
        assert not stray.get("status") and not stray["metadata"].get("finalizers"), stray
        assert cluster.secret(OUTSIDE, "stray") is None
    assert_no_forbidden(release)


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", ["vault", "aws"])
def test_each_external_store_as_the_chart_service_account(
        chart: ChartFactory, rbac_mode: str, cluster: LocalCluster, store_kind: str,
        request: pytest.FixtureRequest) -> None:
    """The store configured through the chart's values (so its ConfigMap), as the SA."""
    store = store_config_for(request, store_kind)
    release = chart(rbac_mode, **stores_values(store))
    assert store[0] in release.config_text()
    probe = StoreProbe(cluster.api, *store)
    release.start_operator()
    cluster.apply(apikey("billing", store=store[0]))
    body = cluster.wait_ready("payments", "billing", timeout=60)
    assert body["status"]["storeRef"].startswith(f"{store[0]}:")
    key_uid = uid(cluster, "payments", "billing")
    first = cluster.secret_data("payments", "billing")["api-key"]
    assert probe.state("payments", "billing", key_uid).current.key == first  # type: ignore[union-attr]

    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "r1"})
    # The status is written last, after the store's promote.
    cluster.wait_for(lambda: version(cluster, "payments", "billing") == 2, 30, "the rotation")
    data = cluster.secret_data("payments", "billing")
    assert data["api-key-previous"] == first
    state = probe.state("payments", "billing", key_uid)
    assert state.current is not None and state.current.key == data["api-key"]
    assert state.valid_keys() == {1: first, 2: data["api-key"]}

    cluster.annotate("payments", "billing", {"apikeys.dev/revoke": "v1"})
    cluster.wait_for(lambda: version(cluster, "payments", "billing") == 3, 30, "the revoke")
    cluster.wait_for(lambda: set(cluster.secret_data("payments", "billing")) == {"api-key"},
                     30, "old keys gone from the Secret")

    cluster.api.delete_object(APIKEYS, "payments", "billing")
    cluster.wait_for(lambda: cluster.apikey("payments", "billing") is None, 30, "deletion")
    cluster.wait_for(lambda: not probe.state("payments", "billing", key_uid).exists, 30,
                     "the store entry deleted")
    cluster.wait_for(lambda: cluster.secret("payments", "billing") is None, 30,
                     "the consumer Secret garbage-collected")
    assert_no_forbidden(release)


@pytest.mark.slow
def test_two_replicas_peer_as_the_chart_service_account(chart: ChartFactory, rbac_mode: str,
                                                        cluster: LocalCluster) -> None:
    """replicaCount 2: no --standalone, the chart's peering objects, one active replica."""
    release = chart(rbac_mode, replicaCount=2)
    assert "--standalone" not in release.chart_args()
    peerings: list[tuple[str, str | None]]
    if rbac_mode == "cluster-wide":
        peerings = [(CLUSTER_PEERINGS, None)]
    else:
        peerings = [(PEERINGS, ns) for ns in WATCHED]
    for resource, ns in peerings:
        assert cluster.api.get_object(resource, ns, "apikey-operator") is not None, (resource, ns)
    replicas = release.start_replicas()
    assert len(replicas) == 2

    def peers(resource: str, ns: str | None) -> dict[str, Any]:
        obj = cluster.api.get_object(resource, ns, "apikey-operator") or {}
        return dict(obj.get("status") or {})

    # Both replicas keep their heartbeat in every peering object (a refused patch would not).
    for resource, ns in peerings:
        cluster.wait_for(lambda r=resource, n=ns: len(peers(r, n)) >= 2, 60,  # type: ignore[misc]
                         f"both replicas in {resource} {ns or ''}")

    names = [("payments", f"key-{i}") for i in range(3)] + [("team-a", "key-t")]
    for ns, name in names:
        cluster.apply(apikey(name, namespace=ns))
    for ns, name in names:
        cluster.wait_ready(ns, name, timeout=60)
    for ns, name in names:
        cluster.annotate(ns, name, {"apikeys.dev/rotate": "once"})
    for ns, name in names:
        cluster.wait_for(lambda n=ns, k=name: (cluster.apikey(n, k) or {})  # type: ignore[misc]
                         .get("status", {}).get("lastHandledRotate") == "once", 60,
                         f"{ns}/{name} rotated")
    time.sleep(3)  # time for a second replica to (wrongly) act as well
    for ns, name in names:
        assert version(cluster, ns, name) == 2, (ns, name)
        reasons = cluster.event_reasons(ns, name)
        assert reasons.count("Provisioned") == 1, (ns, name, reasons)
        assert reasons.count("Rotated") == 1, (ns, name, reasons)
    assert_no_forbidden(release)
