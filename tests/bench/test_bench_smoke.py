"""The benchmark command still works: `python -m bench --smoke` writes every figure.

No timing assertions: the figures depend on the machine; only their presence is checked.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
from bench.report import missing_figures

pytestmark = pytest.mark.integration
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_smoke_run_writes_every_figure(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert missing_figures(results) == []
    assert results["complete"] is True
    assert list(results["sizes"]) == ["50"]
    assert {t["verdict"] for t in results["targets"]} <= {"met", "MISSED", "not measured"}
    assert [t["name"] for t in results["targets"]] == [
        "provisioning writes", "provisioning time", "revoke, one at a time",
        "revoke, 100 at once", "idle", "memory"]
    operator = results["sizes"]["50"]["operator"]
    assert operator["provisioning"]["apply_to_ready"]["count"] == 50
    assert operator["revoke_single"]["annotation_to_gone"]["count"] == 3
    assert operator["revoke_burst"]["annotation_to_gone"]["count"] == 10
    assert operator["rotation_storm"]["due_to_rotated"]["count"] == 50

    markdown = (out / "RESULTS.md").read_text()
    for heading in ("## Targets", "### N = 50", "kopf floor", "## Store backends"):
        assert heading in markdown
