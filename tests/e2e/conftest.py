"""Session fixtures for the real-cluster suite: cluster, image, OpenBao and the chart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_cluster import (
    OPENBAO_NAMESPACE,
    OPENBAO_TOKEN,
    OPERATOR_NAMESPACE,
    ROOT,
    ThrowawayCluster,
    build_and_load_image,
    chart_values,
    openbao_manifests,
    unavailable_reason,
)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayCluster]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("kind")
    created = ThrowawayCluster.create(workdir)
    try:
        yield created
    finally:
        created.delete()


@pytest.fixture(scope="session")
def openbao(cluster: ThrowawayCluster) -> str:
    cluster.apply(openbao_manifests())
    cluster.kubectl(
        "-n", OPENBAO_NAMESPACE, "rollout", "status", "deployment/openbao", "--timeout=180s"
    )
    return OPENBAO_TOKEN


@pytest.fixture(scope="session")
def operator(
    cluster: ThrowawayCluster, openbao: str, tmp_path_factory: pytest.TempPathFactory
) -> ThrowawayCluster:
    """The image built from this tree, installed with the chart; returns the cluster."""
    build_and_load_image(cluster)
    cluster.apply(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": "openbao-token", "namespace": OPERATOR_NAMESPACE},
            "stringData": {"token": openbao},
        }
    )
    values: Path = tmp_path_factory.mktemp("helm") / "values.yaml"
    values.write_text(yaml.safe_dump(chart_values()), encoding="utf-8")
    cluster.helm(
        "install",
        "apikey-operator",
        str(ROOT / "charts" / "apikey-operator"),
        "--namespace",
        OPERATOR_NAMESPACE,
        "--values",
        str(values),
        "--wait",
        "--timeout",
        "5m",
    )
    return cluster
