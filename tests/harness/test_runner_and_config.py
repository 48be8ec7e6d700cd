"""Serving the emulator: the runner thread, in-loop serving, kubeconfig and kubectl argv."""

from __future__ import annotations

import pathlib

import aiohttp
import pytest
import yaml

from apikey_operator.testing.emulator import ApiServerEmulator, KubernetesApiError, serve
from apikey_operator.testing.kube_runner import EmulatorRunner
from apikey_operator.testing.kubeconfig import kubectl_argv, write_kubeconfig
from tests.harness.http import Http

pytestmark = pytest.mark.integration


def test_runner_starts_serves_and_stops(tmp_path: pathlib.Path) -> None:
    runner = EmulatorRunner(namespaces=("default", "team"))
    with runner:
        assert runner.url.startswith("http://127.0.0.1:")
        assert runner.port > 0
        assert Http(runner.url).get("/api/v1/namespaces/team").status == 200
        assert runner.ensure_namespace("team", {"env": "dev"})["metadata"]["labels"]["env"] == \
            "dev"
        with pytest.raises(KubernetesApiError) as missing:
            runner.patch_object("v1/secrets", "default", "absent", {"data": {}})
        assert missing.value.status == 404
    with pytest.raises(RuntimeError):
        runner.url  # noqa: B018 - the property raises once stopped
    runner.stop()  # idempotent


def test_without_crds_only_builtins_are_served() -> None:
    with EmulatorRunner() as runner:
        assert Http(runner.url).get("/apis/apikeys.dev/v1alpha1").status == 404
        assert Http(runner.url).get("/apis/apps/v1").status == 200


def test_strict_namespaces_can_be_relaxed() -> None:
    emulator = ApiServerEmulator(strict_namespaces=False)
    created = emulator.create_object({"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": {"name": "c", "namespace": "anywhere"}})
    assert created["metadata"]["namespace"] == "anywhere"


async def test_serving_on_the_running_loop() -> None:
    emulator = ApiServerEmulator()
    emulator.ensure_namespace("default")
    async with serve(emulator) as url, aiohttp.ClientSession() as session:
        assert str(emulator.url) == url
        async with session.post(f"{url}/api/v1/namespaces/default/configmaps",
                                json={"metadata": {"name": "c"}, "data": {"a": "b"}}) as resp:
            assert resp.status == 201
        async with session.get(f"{url}/api/v1/namespaces/default/configmaps/c") as resp:
            assert (await resp.json())["data"] == {"a": "b"}
    with pytest.raises(RuntimeError):
        emulator.url  # noqa: B018 - the property raises once the server is gone


def test_kubeconfig_points_at_the_server_without_auth(tmp_path: pathlib.Path) -> None:
    path = write_kubeconfig(tmp_path / "sub" / "kc.yaml", "http://127.0.0.1:1234",
                            namespace="team")
    config = yaml.safe_load(path.read_text())
    assert config["clusters"][0]["cluster"] == {"server": "http://127.0.0.1:1234"}
    assert config["users"][0]["user"] == {}
    assert config["contexts"][0]["context"]["namespace"] == "team"
    assert config["current-context"] == config["contexts"][0]["name"]


def test_kubectl_gets_a_cache_dir_per_port(tmp_path: pathlib.Path) -> None:
    first = kubectl_argv(tmp_path / "kc", "http://127.0.0.1:1111", "get", "ns")
    second = kubectl_argv(tmp_path / "kc", "http://127.0.0.1:2222", "get", "ns")
    assert first[-2:] == ["get", "ns"]
    cache_first = [a for a in first if a.startswith("--cache-dir=")]
    cache_second = [a for a in second if a.startswith("--cache-dir=")]
    assert cache_first and cache_second and cache_first != cache_second


def test_workloads_bump_generation_on_template_changes(kube_api: EmulatorRunner) -> None:
    deployment = kube_api.create_object({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "web"}}}},
        "status": {"readyReplicas": 1}})
    assert deployment["metadata"]["generation"] == 1
    restarted = kube_api.patch_object("apps/v1/deployments", "default", "web", {
        "spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}},
        patch_type="application/strategic-merge-patch+json")
    assert restarted["metadata"]["generation"] == 2
    assert restarted["status"] == {"readyReplicas": 1}
