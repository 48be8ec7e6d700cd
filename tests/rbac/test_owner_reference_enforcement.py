"""The chart's RBAC on an API server that enforces owner-reference permissions (as OpenShift
does by default): the OwnerReferencesPermissionEnforcement admission plugin.

The operator owns every consumer Secret with an ownerReference to its ApiKey carrying
``blockOwnerDeletion: true``. With the plugin on, setting that field needs ``update`` on the
owner's ``finalizers`` subresource (``apikeys/finalizers``); without it in the chart (as
before this test existed) every Secret create is refused with 403 and no key is projected.

These tests run a control plane of their own (module scope) with the plugin enabled.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from apikey_operator.testing.controlplane import ControlPlane
from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.kubeapi import KubeApi, KubernetesApiError
from tests.integration.helpers import apikey
from tests.rbac.chart_release import ChartRelease
from tests.rbac.conftest import OUTSIDE, WATCHED, ChartFactory
from tests.support.faults_contract import StoreProbe

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

ENFORCE = "--enable-admission-plugins=OwnerReferencesPermissionEnforcement"
# The rule the chart's namespaced rules lack (the proposed chart fix).
FINALIZERS_RULE = {"apiGroups": ["apikeys.dev"], "resources": ["apikeys/finalizers"],
                   "verbs": ["update"]}


@pytest.fixture(scope="module")
def enforcing_plane() -> Iterator[ControlPlane]:
    with ControlPlane(apiserver_args=[ENFORCE]) as plane:
        yield plane


@pytest.fixture
def cluster(enforcing_plane: ControlPlane, tmp_path: pathlib.Path) -> Iterator[LocalCluster]:
    """Overrides the suite's `cluster`: this module's control plane instead of the shared."""
    with LocalCluster(start_operator=False, namespaces=("default", *WATCHED, OUTSIDE),
                      workdir=tmp_path / "cluster", plane=enforcing_plane) as local:
        yield local


def settled_ready(cluster: LocalCluster, name: str) -> dict[str, Any]:
    """The Ready condition once the first reconcile has decided (Ready or a failure)."""
    return cluster.wait_for(
        lambda: (c := cluster.condition("payments", name)) and c.get("reason") in (
            "Provisioned", "RotationFailed") and c, 60, f"a verdict on payments/{name}")


def provision_and_check(release: ChartRelease, cluster: LocalCluster) -> None:
    operator = release.start_operator()
    cluster.apply(apikey("billing"))
    cond = settled_ready(cluster, "billing")
    assert cond["status"] == "True", (cond, release.forbidden_requests()[:3])
    key = cluster.secret_data("payments", "billing")["api-key"]
    uid = cluster.apikey("payments", "billing")["metadata"]["uid"]  # type: ignore[index]
    state = StoreProbe(cluster.api, "kubernetes").state("payments", "billing", uid)
    assert state.current is not None and state.current.key == key
    assert release.forbidden_requests() == []
    assert release.forbidden_lines() == []
    assert operator.alive


def test_the_enforcing_control_plane_enforces(cluster: LocalCluster) -> None:
    """The plugin is on: as a user who may create Secrets but not update apikeys/finalizers,
    a Secret with blockOwnerDeletion towards an ApiKey is refused."""
    owner = cluster.apply(apikey("owner"))
    api = cluster.api
    api.create_object({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "writer", "namespace": "payments"}})
    api.create_object({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                       "metadata": {"name": "writer", "namespace": "payments"},
                       "rules": [{"apiGroups": [""], "resources": ["secrets"],
                                  "verbs": ["create"]}]})
    api.create_object({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                       "metadata": {"name": "writer", "namespace": "payments"},
                       "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                   "name": "writer"},
                       "subjects": [{"kind": "ServiceAccount", "name": "writer",
                                     "namespace": "payments"}]})
    token = api.request("POST", "/api/v1/namespaces/payments/serviceaccounts/writer/token",
                        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 600}})["status"]["token"]
    writer = KubeApi(cluster.plane.url, token=token, ca_file=cluster.plane.ca_file)
    try:
        ref = {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey", "name": "owner",
               "uid": owner["metadata"]["uid"], "controller": True}
        secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {
            "name": "plain", "namespace": "payments", "ownerReferences": [ref]}}
        writer.create_object(secret)  # without blockOwnerDeletion: allowed
        blocking = {**secret, "metadata": {**secret["metadata"], "name": "blocking",
                                           "ownerReferences": [{**ref,
                                                                "blockOwnerDeletion": True}]}}
        with pytest.raises(KubernetesApiError) as refused:
            writer.create_object(blocking)
        assert refused.value.status == 403
        assert "blockOwnerDeletion" in refused.value.message
    finally:
        writer.close()


def test_the_chart_as_is_provisions_under_owner_reference_enforcement(
        chart: ChartFactory, rbac_mode: str, cluster: LocalCluster) -> None:
    provision_and_check(chart(rbac_mode), cluster)


def test_without_the_finalizers_rule_every_projection_is_refused_and_reported(
        chart: ChartFactory, rbac_mode: str, cluster: LocalCluster) -> None:
    """Why the chart grants update on apikeys/finalizers: taken away from the live release,
    the first Secret create is refused, and the user sees it on the ApiKey."""
    release = chart(rbac_mode)
    role = release.tenant_role()
    rules = release.rules(*role)
    assert FINALIZERS_RULE in rules
    release.set_rules(*role, [r for r in rules if r != FINALIZERS_RULE])
    cluster.wait_for(lambda: not release.can_i("update", "apikeys", "payments",
                                               group="apikeys.dev", subresource="finalizers"),
                     30, "the rule removed")
    operator = release.start_operator()
    cluster.apply(apikey("billing"))
    cond = settled_ready(cluster, "billing")
    assert cond["status"] == "False" and "403" in cond["message"], cond
    assert "blockOwnerDeletion" in cond["message"], cond  # the server's own explanation
    cluster.wait_for(lambda: "RotationFailed" in cluster.event_reasons("payments", "billing"),
                     what="the Warning Event")
    assert cluster.secret("payments", "billing") is None
    assert operator.alive
