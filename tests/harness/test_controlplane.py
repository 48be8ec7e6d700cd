"""The control plane the suite runs on: real binaries, real behaviour, nothing left behind."""

from __future__ import annotations

import os
import pathlib
import subprocess
import time

import pytest
import yaml

from apikey_operator.testing.controlplane import (
    ControlPlane,
    find_assets,
    pinned_versions,
    reset_cluster,
)
from apikey_operator.testing.kubeapi import KubeApi, KubernetesApiError

pytestmark = pytest.mark.integration

APIKEYS = "apikeys.dev/v1alpha1/apikeys"


def apikey(name: str, namespace: str, **spec: object) -> dict[str, object]:
    return {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)}


def test_a_private_control_plane_starts_serves_and_leaves_nothing_behind() -> None:
    plane = ControlPlane()
    with plane:
        workdir = plane.workdir
        pids = [c.proc.pid for c in plane.children if c.proc is not None]
        assert [c.name for c in plane.children] == ["etcd", "kube-apiserver",
                                                    "kube-controller-manager"]
        assert plane.git_version == pinned_versions()["kubernetes"]
        assert plane.api.get_object("v1/namespaces", None, "apikey-operator") is not None
        crds = {c["metadata"]["name"] for c in plane.api.list_objects(
            "apiextensions.k8s.io/v1/customresourcedefinitions")}
        assert {"apikeys.apikeys.dev", "rotationpolicies.apikeys.dev"} <= crds
    assert not workdir.exists()
    for pid in pids:
        assert not pathlib.Path(f"/proc/{pid}").exists() or \
            "zombie" in pathlib.Path(f"/proc/{pid}/status").read_text().lower()


def test_the_binaries_report_the_pinned_release() -> None:
    assets = find_assets()
    out = subprocess.run([assets["kube-apiserver"], "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"Kubernetes {pinned_versions()['kubernetes']}"


def test_requests_without_credentials_are_refused(control_plane: ControlPlane) -> None:
    anonymous = KubeApi(control_plane.url, ca_file=control_plane.ca_file)
    try:
        with pytest.raises(KubernetesApiError) as caught:
            anonymous.list_objects("v1/secrets", "default")
        assert caught.value.status in (401, 403)
    finally:
        anonymous.close()


def test_the_real_schema_rejects_with_the_field_path(control_plane: ControlPlane,
                                                    kube_namespace: str) -> None:
    with pytest.raises(KubernetesApiError) as caught:
        control_plane.api.create_object(apikey("short", kube_namespace, key={"length": 4}))
    assert caught.value.status == 422
    assert "spec.key.length" in caught.value.message


def test_the_real_schema_applies_defaults(control_plane: ControlPlane,
                                          kube_namespace: str) -> None:
    created = control_plane.api.create_object(apikey("defaults", kube_namespace))
    assert created["spec"]["key"]["length"] == 32
    assert created["spec"]["deletionPolicy"] == "Delete"


def test_status_is_a_subresource(control_plane: ControlPlane, kube_namespace: str) -> None:
    api = control_plane.api
    created = api.create_object({**apikey("st", kube_namespace), "status": {"storeRef": "x"}},
                                keep_status=False)
    assert "storeRef" not in (created.get("status") or {})
    api.patch_object(APIKEYS, kube_namespace, "st", {"status": {"storeRef": "y"}},
                     subresource="status")
    assert (api.get_object(APIKEYS, kube_namespace, "st") or {})["status"]["storeRef"] == "y"


def test_a_stale_resource_version_conflicts(control_plane: ControlPlane,
                                            kube_namespace: str) -> None:
    api = control_plane.api
    created = api.create_object({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": "cm", "namespace": kube_namespace},
                                 "data": {"a": "1"}})
    api.patch_object("v1/configmaps", kube_namespace, "cm", {"data": {"a": "2"}})
    with pytest.raises(KubernetesApiError) as caught:
        api.replace_object({**created, "data": {"a": "3"}})
    assert caught.value.status == 409


def test_owned_objects_are_garbage_collected(control_plane: ControlPlane,
                                             kube_namespace: str) -> None:
    api = control_plane.api
    owner = api.create_object({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "owner", "namespace": kube_namespace}})
    api.create_object({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "owned", "namespace": kube_namespace, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner["metadata"]["uid"]}]}})
    api.delete_object("v1/configmaps", kube_namespace, "owner")
    deadline = time.monotonic() + 30
    while api.get_object("v1/secrets", kube_namespace, "owned") is not None:
        assert time.monotonic() < deadline, "the garbage collector never deleted the Secret"
        time.sleep(0.1)


def test_watch_streams_events_in_order(control_plane: ControlPlane,
                                       kube_namespace: str) -> None:
    api = control_plane.api
    listed = api.request("GET", api.path("v1/configmaps", kube_namespace))
    rv = listed["metadata"]["resourceVersion"]
    api.create_object({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "w", "namespace": kube_namespace}})
    api.delete_object("v1/configmaps", kube_namespace, "w")
    seen = []
    for event in api.watch("v1/configmaps", kube_namespace, resource_version=rv, timeout=2):
        if event["type"] != "BOOKMARK":
            seen.append((event["type"], event["object"]["metadata"]["name"]))
        if len(seen) == 2:
            break
    assert seen == [("ADDED", "w"), ("DELETED", "w")]


def test_reset_empties_what_a_test_left(control_plane: ControlPlane) -> None:
    api = control_plane.api
    api.ensure_namespace("left-over", {"team": "x"})
    api.ensure_namespace("kept", {"team": "y"})
    api.create_object({**apikey("stuck", "kept"),
                       "metadata": {"name": "stuck", "namespace": "kept",
                                    "finalizers": ["apikeys.dev/cleanup"]}})
    api.create_object({**apikey("stuck", "left-over"),
                       "metadata": {"name": "stuck", "namespace": "left-over",
                                    "finalizers": ["apikeys.dev/cleanup"]}})
    api.create_object({"apiVersion": "apikeys.dev/v1alpha1", "kind": "RotationPolicy",
                       "metadata": {"name": "p"}, "spec": {"rotateEvery": "1d"}})
    reset_cluster(api, ("kept", "apikey-operator"))
    assert api.get_object("v1/namespaces", None, "left-over") is None
    kept = api.get_object("v1/namespaces", None, "kept") or {}
    assert "team" not in (kept["metadata"].get("labels") or {})
    assert api.list_objects(APIKEYS) == []
    assert api.list_objects("apikeys.dev/v1alpha1/rotationpolicies") == []
    reset_cluster(api, ("apikey-operator",))


def test_users_can_point_the_harness_at_their_own_binaries(tmp_path: pathlib.Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    real = find_assets()
    for component, path in real.items():
        os.symlink(path, tmp_path / component)
    monkeypatch.setenv("APIKEY_OPERATOR_ASSETS", str(tmp_path))
    assert find_assets() == {c: str(tmp_path / c) for c in real}


def test_the_kubeconfig_works_for_kubectl(control_plane: ControlPlane,
                                          kubectl: object) -> None:
    result = kubectl("version", "-o", "yaml")  # type: ignore[operator]
    server = yaml.safe_load(result.stdout)["serverVersion"]
    assert server["gitVersion"] == pinned_versions()["kubernetes"]
