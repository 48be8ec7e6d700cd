"""The benchmark command still works: `python -m bench --smoke` writes every figure.

It runs on the real control plane (etcd + kube-apiserver + kube-controller-manager) with the
counting proxy in front. No timing assertions: the figures depend on the machine; only their
presence and sanity are checked (every key Ready, requests counted, an idle window without
writes, the driver never counted, the server's CPU measured).
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


# About 100 s on an idle 2-core machine (four control planes are started); 410 s were seen at a
# load average of 15, hence the slack.
@pytest.mark.timeout(900)
def test_smoke_run_writes_every_figure(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out),
         "--workdir", str(tmp_path / "work")],
        cwd=REPO, capture_output=True, text=True, timeout=870, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert missing_figures(results) == []
    assert results["complete"] is True
    assert list(results["sizes"]) == ["50"]
    assert {t["verdict"] for t in results["targets"]} <= {"met", "MISSED", "not measured"}
    # Issue 17's targets, in its order; at smoke sizes each is "not measured" or judged on
    # what a small run already shows (a miss at 50 keys is a miss at 10,000).
    assert [t["name"] for t in results["targets"]] == [
        "provisioning CPU", "provisioning time", "revoke, one at a time",
        "revoke, 100 at once", "memory", "idle", "rotation storm", "start-up"]
    assert results["control_plane"]["kube_apiserver"].startswith("v1.")
    size = results["sizes"]["50"]
    operator, baseline = size["operator"], size["baseline"]
    assert operator["provisioning"]["apply_to_ready"]["count"] == 50
    assert baseline["provisioning"]["apply_to_ready"]["count"] == 50
    assert operator["revoke_single"]["annotation_to_gone"]["count"] == 3
    assert operator["revoke_burst"]["annotation_to_gone"]["count"] == 10
    assert operator["rotation_storm"]["due_to_rotated"]["count"] == 50
    assert operator["rotation_storm"]["all_rotated"] is True
    assert len(operator["provisioning"]["apply_to_ready_samples_s"]) == 50

    # The large run (smoke: 30 keys): memory per key, idle, revoke, start-up after a restart.
    large = results["large"]["30"]["operator"]
    assert large["provisioning"]["apply_to_ready"]["count"] == 30
    assert large["memory_idle"]["rss_kb_per_key"] > 0
    assert large["idle"]["api"]["writes_per_key"]["all"] == 0
    assert large["revoke_single"]["annotation_to_gone"]["count"] == 3
    startup = large["startup"]
    assert startup["new_key_ready_seconds"] > 0
    assert startup["rewrites"] >= 0
    assert startup["first_restart"]["requests"] >= 0
    for store in ("vault", "aws"):
        assert results["stores"][store]["apply_to_ready"]["count"] == 10

    for side in (operator, baseline):
        api = side["provisioning"]["api"]
        # At least a Secret create and kopf's status patch per key; nothing from the driver.
        assert api["requests_per_key"] >= 2
        assert api["writes_per_key"]["all"] >= 2
        assert all(row["actor"] != "bench" for row in api["rows"])
        assert side["provisioning"]["operator_cpu_seconds"] > 0
        assert side["provisioning"]["apiserver_cpu_seconds"] > 0
        assert side["provisioning"]["etcd_cpu_seconds"] > 0
        assert side["memory"]["apiserver_rss_mb"] > 0
    assert operator["provisioning"]["store"]["calls_per_key"] > 0
    # The operator's own writes: its Secrets (consumer and built-in store) and status patch.
    assert operator["provisioning"]["api"]["writes_per_key"]["ours_excluding_events"] >= 2
    idle = operator["idle"]
    assert idle["api"]["writes_per_key"]["all"] == 0
    assert idle["store_calls_per_key_per_minute"] == 0
    assert operator["rotation_storm"]["store"]["calls_per_key"] > 0

    markdown = (out / "RESULTS.md").read_text()
    for heading in ("## Targets", "### N = 50", "kopf floor", "## Store backends",
                    "kube-apiserver v1.", "kube-apiserver CPU s", "Large run", "N = 30"):
        assert heading in markdown
    # No data, keys or tokens of the stopped control planes are left in the work folder.
    work = tmp_path / "work"
    assert not list(work.glob("*/cluster/controlplane/etcd"))
    assert not list(work.glob("*/cluster/**/kubeconfig"))
