"""The real helm CLI and promtool for the chart tests: the pinned builds of tools/build-go-tools.

`find_tool` raises ServerError naming the build command when a binary is missing: the chart
tests fail then, they never skip. Helm runs with its cache, config and data folders in a
temporary folder and no kubeconfig unless a test gives one, so the user's Helm setup and
clusters play no part.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from apikey_operator.testing.controlplane import find_tool, pinned_versions

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "apikey-operator"
HERE = Path(__file__).resolve().parent
RELEASE = "apikey-operator"
NAMESPACE = "apikey-operator"
# The Kubernetes the repository pins (tools/go/kubernetes): `helm template` renders for it, and
# the API server that `helm install --dry-run=client` talks to is that build.
KUBE_VERSION = pinned_versions()["kubernetes"].removeprefix("v")

# What a cluster with the Prometheus Operator installed serves, as far as the chart can use:
# (group/version, kind). `helm template` is told about each one with --api-versions, both as
# group/version and as group/version/Kind, the two forms .Capabilities.APIVersions.Has accepts.
SERVED = [
    ("v1", "Namespace"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("v1", "Event"),
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
]
API_VERSIONS = sorted({gv for gv, _ in SERVED} | {f"{gv}/{kind}" for gv, kind in SERVED})

Render = Callable[[dict[str, Any]], dict[str, Any]]


class RenderError(Exception):
    """Helm refused to render (bad values, template error); the message is Helm's stderr."""


def helm_binary() -> str:
    return find_tool("helm", "helm")


def promtool_binary() -> str:
    return find_tool("prometheus", "promtool")


def documents(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML stream (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


class Helm:
    """The helm CLI with a private home; every method runs the binary once."""

    def __init__(self, home: Path) -> None:
        self.binary = helm_binary()
        self.home = home
        for folder in ("cache", "config", "data", "values"):
            (home / folder).mkdir(parents=True, exist_ok=True)

    def env(self, kubeconfig: Path | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
        env.update(
            HELM_CACHE_HOME=str(self.home / "cache"),
            HELM_CONFIG_HOME=str(self.home / "config"),
            HELM_DATA_HOME=str(self.home / "data"),
            # No cluster unless one is given: `helm template` must not need one.
            KUBECONFIG=str(kubeconfig or self.home / "no-kubeconfig"),
        )
        return env

    def run(self, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args],
            capture_output=True,
            text=True,
            env=self.env(kubeconfig),
            cwd=ROOT,
            timeout=120,
            check=False,
        )

    def values_file(self, values: dict[str, Any]) -> Path:
        text = json.dumps(values, sort_keys=True)
        path = self.home / "values" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
        path.write_text(text, encoding="utf-8")
        return path

    def template_text(self, values: dict[str, Any], *extra: str) -> str:
        """`helm template` of the chart for the pinned Kubernetes with the Prometheus
        Operator's kinds served, CRDs (crds/) included; RenderError with Helm's message."""
        api_versions = [f"--api-versions={v}" for v in API_VERSIONS]
        result = self.run(
            "template", RELEASE, str(CHART),
            "--namespace", NAMESPACE,
            "--values", str(self.values_file(values)),
            "--include-crds",
            "--kube-version", KUBE_VERSION,
            *api_versions,
            *extra,
        )
        if result.returncode != 0:
            raise RenderError(result.stderr.strip())
        return result.stdout

    def template(self, values: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
        return documents(self.template_text(values, *extra))

    def install_dry_run(self, values: dict[str, Any], kubeconfig: Path) -> dict[str, Any]:
        """The release `helm install --dry-run=client -o json` makes against the API server of
        `kubeconfig` (Helm 3 needs a reachable one even for a client dry run)."""
        result = self.run(
            "install", RELEASE, str(CHART),
            "--namespace", NAMESPACE,
            "--values", str(self.values_file(values)),
            "--dry-run=client",
            "--output", "json",
            kubeconfig=kubeconfig,
        )
        if result.returncode != 0:
            raise RenderError(result.stderr.strip())
        release: dict[str, Any] = json.loads(result.stdout)
        return release

    def lint(
        self, chart: Path = CHART, values: dict[str, Any] | None = None, strict: bool = True
    ) -> subprocess.CompletedProcess[str]:
        args = ["lint", str(chart), "--namespace", NAMESPACE]
        if strict:
            args.append("--strict")
        if values is not None:
            args += ["--values", str(self.values_file(values))]
        return self.run(*args)


class Rendered(dict[str, Any]):
    """{"objects": [...]} from `helm template`; "notes" (Helm's rendered NOTES.txt) and
    "release" (the whole dry-run release) are filled in on first lookup, by
    `helm install --dry-run=client`: `helm template` never prints NOTES.txt."""

    def __init__(self, objects: list[dict[str, Any]], release: Callable[[], dict[str, Any]]):
        super().__init__(objects=objects)
        self._release = release

    def __missing__(self, key: str) -> Any:
        if key not in ("notes", "release"):
            raise KeyError(key)
        release = self._release()
        self["release"] = release
        self["notes"] = release["info"].get("notes", "")
        return self[key]
