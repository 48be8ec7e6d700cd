"""Fixtures for the RBAC suite: the chart installed with helm, the operator run as its SA.

`chart(values)` installs charts/apikey-operator with the real helm CLI into a fresh
LocalCluster (the shared control plane, reset) and returns the `ChartRelease`; at the end of
the test the operator processes are stopped, the release is uninstalled with `helm
uninstall` and its cluster-scoped RBAC objects are removed. `rbac_mode` parametrizes a test
over the chart's two ways of granting access:

- ``cluster-wide``: ``watchNamespaces: []`` -> one ClusterRole with every rule and
  ``--all-namespaces``;
- ``per-namespace``: ``watchNamespaces: [payments, team-a]`` -> a Role and RoleBinding in each
  watched namespace, a ClusterRole with only the cluster-scoped reads, and one
  ``--namespace=NS`` per watched namespace. ``outside`` exists and is not watched.

The store servers (OpenBao, moto) and the dummy AWS credentials the operator processes
inherit are the reliability suite's session fixtures.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from apikey_operator.testing.harness import LocalCluster
from tests.chart.chart_tools import Helm
from tests.rbac.chart_release import ChartRelease
from tests.reliability.conftest import (  # noqa: F401 (fixtures)
    aws_environment,
    bao,
    bao_token_file,
    moto,
)

WATCHED = ("payments", "team-a")
OUTSIDE = "outside"
MODES: dict[str, dict[str, Any]] = {
    "cluster-wide": {"watchNamespaces": []},
    "per-namespace": {"watchNamespaces": list(WATCHED)},
}
ChartFactory = Callable[..., ChartRelease]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(tmp_path_factory.mktemp("rbac-helm-home"))


@pytest.fixture(params=sorted(MODES))
def rbac_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[LocalCluster]:
    """The shared control plane, reset, behind a proxy; no operator of its own."""
    with LocalCluster(start_operator=False, namespaces=("default", *WATCHED, OUTSIDE),
                      workdir=tmp_path / "cluster") as local:
        yield local


@pytest.fixture
def chart(cluster: LocalCluster, helm: Helm, tmp_path: pathlib.Path) -> Iterator[ChartFactory]:
    releases: list[ChartRelease] = []

    def install(mode: str, **values: Any) -> ChartRelease:
        merged: dict[str, Any] = {**MODES[mode], **values}
        release = ChartRelease(cluster, helm, merged, tmp_path / f"release-{len(releases)}")
        releases.append(release)
        return release.install()

    yield install
    for release in releases:
        release.uninstall()
    for release in releases:
        # Nothing cluster-scoped of the release may outlive it on the shared control plane.
        assert release.left_by_helm == [], f"helm uninstall left {release.left_by_helm}"


def stores_values(store: tuple[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The chart's `stores` value for one extra store (the built-in one stays)."""
    name, config = store
    return {"stores": {"kubernetes": {"type": "kubernetes"}, name: dict(config)}}
