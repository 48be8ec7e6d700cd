"""The GitHub Actions workflow that runs the e2e suite is valid and runs what it should."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from e2e_cluster import ROOT

pytestmark = pytest.mark.unit

WORKFLOW = ROOT / ".github" / "workflows" / "e2e.yaml"


def load() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return loaded


def test_the_workflow_parses_with_triggers_and_a_job() -> None:
    workflow = load()
    # YAML 1.1 reads the bare key `on` as the boolean true.
    triggers = workflow.get("on", workflow.get(True))
    assert {"push", "pull_request"} <= set(triggers)
    assert workflow["permissions"] == {"contents": "read"}
    (job,) = workflow["jobs"].values()
    assert job["timeout-minutes"] <= 60
    assert all("uses" in step or "run" in step for step in job["steps"])


def test_the_job_installs_kind_and_helm_and_runs_the_suite_enabled() -> None:
    (job,) = load()["jobs"].values()
    uses = [step.get("uses", "") for step in job["steps"]]
    assert any(u.startswith("helm/kind-action@") for u in uses)
    # helm (and the rest of the pinned tools) come from the Go module proxy, as on our machines.
    assert any(u.startswith("actions/setup-go@") for u in uses)
    assert any(step.get("run") == "make tools" for step in job["steps"])
    runs = [step for step in job["steps"] if "pytest -m e2e" in step.get("run", "")]
    assert len(runs) == 1
    assert runs[0]["env"]["APIKEY_E2E"] == "1"
    assert "tests/e2e" in runs[0]["run"]
