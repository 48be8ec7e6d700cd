"""Running `apikey-operator` as users do: a subprocess with its own environment."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from apikey_operator.testing.harness import LocalCluster

BIN = pathlib.Path(sys.executable).parent
EXE = str(BIN / "apikey-operator")


def cli(*args: str, kubeconfig: pathlib.Path | str | None = None,
        env: Mapping[str, str] | None = None, timeout: float = 120,
        cwd: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the command line; KUBECONFIG is `kubeconfig` (unset when None)."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("KUBECONFIG", "APIKEY_OPERATOR_CONFIG", "POD_NAMESPACE")}
    if kubeconfig is not None:
        environment["KUBECONFIG"] = str(kubeconfig)
    environment.update(env or {})
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout,
                          env=environment, cwd=cwd, check=False)


def kubeconfig_for(cluster: LocalCluster, namespace: str = "payments") -> pathlib.Path:
    """A kubeconfig whose context's namespace is `namespace` (the harness's says default)."""
    assert cluster.proxy is not None
    return cluster.plane.write_kubeconfig(cluster.workdir / f"kubeconfig-{namespace}",
                                          server=cluster.proxy.url, namespace=namespace)


def dead_kubeconfig(path: pathlib.Path) -> tuple[pathlib.Path, str]:
    """A kubeconfig for a server address where nothing listens; (path, server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"https://127.0.0.1:{port}"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: dead, cluster: {{server: '{server}', "
        "insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: nothing}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: u, namespace: payments}}]\n"
        "current-context: dead\n", encoding="utf-8")
    return path, server


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (asserting it is one, with no traceback)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def status_of(cluster: LocalCluster, namespace: str, name: str) -> dict[str, Any]:
    return dict((cluster.apikey(namespace, name) or {}).get("status") or {})
