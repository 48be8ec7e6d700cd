"""kubectl, lightkube and kopf against the emulated API server."""

from __future__ import annotations

import json
import pathlib
import threading
import time
from typing import Any

import kopf
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

from apikey_operator.testing.fixtures_kube import KubectlFn
from apikey_operator.testing.kopf_runner import KopfOperatorThread
from apikey_operator.testing.kube_runner import EmulatorRunner
from tests.harness.http import Http, apikey

pytestmark = pytest.mark.integration

ApiKey = create_namespaced_resource("apikeys.dev", "v1alpha1", "ApiKey", "apikeys")

MANIFEST = """
apiVersion: apikeys.dev/v1alpha1
kind: ApiKey
metadata: {name: billing, namespace: default}
spec:
  key: {length: 24, prefix: bill_}
---
apiVersion: v1
kind: Secret
metadata: {name: plain, namespace: default}
stringData: {token: abc}
"""


def test_kubectl_apply_get_describe_annotate_patch(kubectl: KubectlFn, http: Http) -> None:
    applied = kubectl("apply", "-f", "-", input=MANIFEST)
    assert "apikey.apikeys.dev/billing created" in applied.stdout
    assert "secret/plain created" in applied.stdout
    again = kubectl("apply", "-f", "-", input=MANIFEST)
    assert "apikey.apikeys.dev/billing unchanged" in again.stdout

    table = kubectl("get", "apikeys.apikeys.dev", "-A").stdout.splitlines()
    assert table[0].split()[:4] == ["NAMESPACE", "NAME", "READY", "REASON"]
    assert table[1].split()[:3] == ["default", "billing", "kubernetes"]
    assert "plain" in kubectl("get", "secrets").stdout
    assert "apikey-operator" in kubectl("get", "namespaces").stdout

    kubectl("annotate", "ak", "billing", "apikeys.dev/rotate=1")
    kubectl("patch", "ak", "billing", "--type=merge", "-p", '{"spec":{"store":"vault"}}')
    body = json.loads(kubectl("get", "ak", "billing", "-o", "json").stdout)
    assert body["metadata"]["annotations"]["apikeys.dev/rotate"] == "1"
    assert body["spec"]["store"] == "vault"
    assert body["spec"]["key"] == {"length": 24, "prefix": "bill_", "encoding": "base62"}

    http.post("/api/v1/namespaces/default/events", {
        "metadata": {"generateName": "billing."}, "type": "Normal", "reason": "Provisioned",
        "message": "the key is ready",
        "involvedObject": {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
                           "name": "billing", "namespace": "default",
                           "uid": body["metadata"]["uid"]}})
    described = kubectl("describe", "apikey", "billing").stdout
    assert "Name:         billing" in described
    assert "Provisioned" in described and "the key is ready" in described


def test_kubectl_reports_schema_violations(kubectl: KubectlFn, http: Http) -> None:
    bad = MANIFEST.replace("length: 24", "length: 8")
    result = kubectl("apply", "-f", "-", input=bad, check=False)
    assert result.returncode != 0
    assert "spec.key.length" in result.stderr
    # kubectl asks for strict field validation, as against a real server: typos fail loudly.
    typo = MANIFEST.replace("prefix: bill_", "prefix: bill_, lenght: 32")
    result = kubectl("apply", "-f", "-", input=typo, check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.key.lenght"' in result.stderr
    assert http.get("/apis/apikeys.dev/v1alpha1/namespaces/default/apikeys/billing").status == 404


async def test_lightkube_async_client_round_trip(kube_api: EmulatorRunner,
                                                 kubeconfig: pathlib.Path) -> None:
    client = AsyncClient(config=KubeConfig.from_file(kubeconfig))
    try:
        created = await client.create(Secret(metadata=ObjectMeta(name="s", namespace="default"),
                                             stringData={"k": "v"}))
        assert created.metadata is not None and created.metadata.uid
        assert created.data == {"k": "dg=="}
        got = await client.get(Secret, "s", namespace="default")
        patched = await client.patch(Secret, "s", {"metadata": {"labels": {"a": "b"}}},
                                     namespace="default")
        assert patched.metadata is not None and patched.metadata.labels == {"a": "b"}
        got.data = {"k": "dw=="}
        with pytest.raises(ApiError) as conflict:
            await client.replace(got)
        assert conflict.value.status.code == 409
        fresh = await client.get(Secret, "s", namespace="default")
        fresh.data = {"k": "dw=="}
        replaced = await client.replace(fresh)
        assert replaced.data == {"k": "dw=="}
        names = [s.metadata.name async for s in client.list(Secret, namespace="default",
                                                              labels={"a": "b"})
                 if s.metadata is not None]
        assert names == ["s"]

        key = await client.create(ApiKey(metadata=ObjectMeta(name="k", namespace="default"),
                                         spec={}))
        assert key.spec["key"]["length"] == 32
        status = await client.patch(ApiKey.Status, "k",
                                    {"status": {"storeRef": "kubernetes:x"}},
                                    namespace="default", patch_type=PatchType.MERGE)
        assert status.status == {"storeRef": "kubernetes:x"}
        with pytest.raises(ApiError) as invalid:
            await client.create(ApiKey(metadata=ObjectMeta(name="bad", namespace="default"),
                                       spec={"key": {"encoding": "rot13"}}))
        assert invalid.value.status.code == 422

        await client.delete(Secret, "s", namespace="default")
        with pytest.raises(ApiError) as missing:
            await client.get(Secret, "s", namespace="default")
        assert missing.value.status.code == 404
    finally:
        await client.close()


def _tiny_operator(registry: kopf.OperatorRegistry, seen: list[str]) -> None:
    @kopf.on.create("apikeys.dev", "v1alpha1", "apikeys", registry=registry)
    def on_create(name: str, patch: kopf.Patch, body: kopf.Body, **_: Any) -> None:
        seen.append(name)
        patch.status["storeRef"] = f"kubernetes:{name}"
        kopf.info(body, reason="Provisioned", message="created by the tiny operator")

    @kopf.on.delete("apikeys.dev", "v1alpha1", "apikeys", registry=registry)
    def on_delete(name: str, **_: Any) -> None:
        seen.append(f"deleted:{name}")


def _wait(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_kopf_operator_handles_create_and_delete(kube_api: EmulatorRunner) -> None:
    registry = kopf.OperatorRegistry()
    seen: list[str] = []
    _tiny_operator(registry, seen)
    settings = kopf.OperatorSettings()
    settings.posting.level = 0  # post every event, so that they can be asserted
    with KopfOperatorThread(server_url=kube_api.url, registry=registry, settings=settings,
                            namespaces=["default"]):
        for name in ("one", "two"):
            kube_api.create_object(apikey(name))

        def provisioned() -> bool:
            keys = [kube_api.get_object("apikeys", "default", n) for n in ("one", "two")]
            return all(k is not None and k.get("status", {}).get("storeRef") for k in keys)

        assert _wait(provisioned), kube_api.list_objects("apikeys")
        one = kube_api.get_object("apikeys", "default", "one")
        assert one is not None
        assert one["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
        assert one["status"]["storeRef"] == "kubernetes:one"
        def events() -> list[dict[str, Any]]:
            return [e for e in kube_api.list_objects("v1/events", "default")
                    if e["reason"] == "Provisioned"]

        assert _wait(lambda: len(events()) == 2)
        assert all(e["metadata"]["name"].startswith("kopf-event-") for e in events())
        assert {e["involvedObject"]["name"] for e in events()} == {"one", "two"}

        kube_api.delete_object("apikeys", "default", "one")
        assert _wait(lambda: kube_api.get_object("apikeys", "default", "one") is None)
        assert "deleted:one" in seen

        # Cut streams and a failing write: kopf re-watches and retries, as with a real server.
        assert kube_api.cut_watches("apikeys") >= 1
        kube_api.traffic.inject(status=500, verbs="patch", resource="apikeys")
        kube_api.create_object(apikey("three"))

        def three_done() -> bool:
            three = kube_api.get_object("apikeys", "default", "three")
            return bool(three and three.get("status", {}).get("storeRef"))

        assert _wait(three_done, timeout=20)
        injected = [r for r in kube_api.traffic.records(verbs="patch", resource="apikeys")
                    if r.injected]
        assert len(injected) == 1
    assert sorted(n for n in seen if not n.startswith("deleted:")) == ["one", "three", "two"]
    failures = [r for r in kube_api.traffic.records(include_watches=True, include_discovery=True)
                if r.status is not None and r.status >= 500 and not r.injected]
    assert failures == []


def test_kubectl_waits_for_a_finalized_deletion(kubectl: KubectlFn,
                                                kube_api: EmulatorRunner) -> None:
    kube_api.create_object({**apikey("c"), "metadata": {"name": "c", "namespace": "default",
                                                        "finalizers": ["x/y"]}})
    kube_api.delete_object("apikeys", "default", "c")
    assert kube_api.get_object("apikeys", "default", "c") is not None
    def release_once_kubectl_watches() -> None:
        # Release only after kubectl is waiting, however slowly it starts on a busy machine.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not kube_api.call(
                kube_api.emulator.watch_count, "apikeys"):
            time.sleep(0.05)
        kube_api.patch_object("apikeys", "default", "c", {"metadata": {"finalizers": None}})

    release = threading.Thread(target=release_once_kubectl_watches)
    release.start()
    result = kubectl("wait", "--for=delete", "ak/c", "--timeout=20s")
    release.join()
    assert "condition met" in result.stdout
    assert kube_api.get_object("apikeys", "default", "c") is None


def test_kubectl_imperative_creates_send_protobuf_we_decode(kubectl: KubectlFn,
                                                            kube_api: EmulatorRunner) -> None:
    kubectl("create", "namespace", "team-x")
    kubectl("create", "secret", "generic", "s", "--from-literal=token=abc", "-n", "team-x")
    kubectl("create", "configmap", "cm", "--from-literal=x=y")
    secret = kube_api.get_object("v1/secrets", "team-x", "s")
    assert secret is not None
    assert secret["data"] == {"token": "YWJj"}
    assert secret["type"] == "Opaque"
    assert "generateName" not in secret["metadata"]
    configmap = kube_api.get_object("v1/configmaps", "default", "cm")
    assert configmap is not None and configmap["data"] == {"x": "y"}
    refused = kubectl("create", "deployment", "web", "--image=nginx", check=False)
    assert refused.returncode != 0
    assert "kubectl apply" in refused.stderr


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: app
          image: app:1
          ports: [{containerPort: 8080}]
          env: [{name: A, value: "1"}, {name: B, value: "2"}]
"""


def test_kubectl_apply_updates_builtins_with_strategic_merge(kubectl: KubectlFn,
                                                             kube_api: EmulatorRunner) -> None:
    kubectl("apply", "-f", "-", input=DEPLOYMENT)
    changed = DEPLOYMENT.replace("app:1", "app:2").replace(', {name: B, value: "2"}', "")
    assert "configured" in kubectl("apply", "-f", "-", input=changed).stdout
    deployment = kube_api.get_object("apps/v1/deployments", "default", "web")
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "app:2"
    assert container["ports"] == [{"containerPort": 8080}]
    assert container["env"] == [{"name": "A", "value": "1"}]
    assert deployment["metadata"]["generation"] == 2
    kubectl("rollout", "restart", "deployment/web")
    restarted = kube_api.get_object("apps/v1/deployments", "default", "web")
    assert restarted is not None
    assert "kubectl.kubernetes.io/restartedAt" in restarted["spec"]["template"]["metadata"][
        "annotations"]
