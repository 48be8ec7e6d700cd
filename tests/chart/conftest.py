"""Fixtures that render the chart with the real helm CLI (see chart_tools.py).

`render(values)` returns {"objects": [...], "notes": "..."}: the objects are `helm template`'s
output; the notes come from `helm install --dry-run=client` on first lookup of "notes", which
Helm 3 runs only against a reachable API server, so the first test that reads notes starts a
real kube-apiserver (the repository's pinned build, via ControlPlane) for the session.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart_tools import CHART, HERE, NAMESPACE, Helm, Render, Rendered

from apikey_operator.testing.controlplane import ControlPlane


class NotesCluster:
    """A real kube-apiserver (etcd, no controller manager) started on first use, serving the
    kinds the chart creates but does not define: kopf's peerings (the chart's crds/, which a
    dry run does not install) and the Prometheus Operator's ServiceMonitor and PrometheusRule.
    The chart's own CRDs are not installed: they are objects of the release, and Helm refuses
    to install over objects that exist without its ownership metadata."""

    def __init__(self) -> None:
        self._plane: ControlPlane | None = None

    def kubeconfig(self) -> Path:
        if self._plane is None:
            plane = ControlPlane(
                crd_paths=[CHART / "crds", HERE / "prometheus-operator-crds.yaml"],
                namespaces=(NAMESPACE,),
                controller_manager=False,
            )
            plane.start()
            self._plane = plane
        return self._plane.kubeconfig

    def stop(self) -> None:
        if self._plane is not None:
            self._plane.stop()
            self._plane = None


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def notes_cluster() -> Iterator[NotesCluster]:
    cluster = NotesCluster()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def render(helm: Helm, notes_cluster: NotesCluster) -> Render:
    cache: dict[str, Rendered] = {}

    def _render(values: dict[str, Any]) -> dict[str, Any]:
        key = json.dumps(values, sort_keys=True)
        if key not in cache:
            frozen = copy.deepcopy(values)
            cache[key] = Rendered(
                helm.template(frozen),
                lambda: helm.install_dry_run(frozen, notes_cluster.kubeconfig()),
            )
        return cache[key]

    return _render
