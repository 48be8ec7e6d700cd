"""The e2e suite's safety guard and its chart values, checked without a cluster."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from e2e_cluster import ROOT, RefusedContext, ThrowawayCluster, chart_values, unavailable_reason

pytestmark = pytest.mark.unit


def kubeconfig(path: Path, context: str, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": context,
                "clusters": [{"name": context, "cluster": {"server": server}}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
                "users": [{"name": context, "user": {}}],
            }
        ),
        encoding="utf-8",
    )
    return path


def test_accepts_its_own_kind_context(tmp_path: Path) -> None:
    config = kubeconfig(tmp_path / "k", "kind-apikey-e2e-abc123", "https://127.0.0.1:40000")
    ThrowawayCluster("apikey-e2e-abc123", config, kind=None).check()


@pytest.mark.parametrize(
    ("context", "server"),
    [
        ("production", "https://127.0.0.1:40000"),
        ("kind-apikey-e2e-other", "https://127.0.0.1:40000"),
        ("kind-apikey-e2e-abc123", "https://k8s.prod.example:6443"),
    ],
)
def test_refuses_any_other_context(tmp_path: Path, context: str, server: str) -> None:
    config = kubeconfig(tmp_path / "k", context, server)
    cluster = ThrowawayCluster("apikey-e2e-abc123", config, kind=None)
    with pytest.raises(RefusedContext):
        cluster.check()
    with pytest.raises(RefusedContext):
        cluster.kubectl("delete", "namespace", "payments")


def test_skips_unless_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIKEY_E2E", raising=False)
    reason = unavailable_reason()
    assert reason is not None and reason.startswith("no Docker engine / kind")


def test_the_e2e_values_satisfy_the_chart_schema() -> None:
    chart = ROOT / "charts" / "apikey-operator"
    schema = json.loads((chart / "values.schema.json").read_text(encoding="utf-8"))
    assert list(jsonschema.Draft7Validator(schema).iter_errors(chart_values())) == []
