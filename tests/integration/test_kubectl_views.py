"""What a user sees with kubectl on the real server: every watch update is a full row, Events
have LAST SEEN, describe shows conditions (the emulator of the first round got these wrong)."""

from __future__ import annotations

import subprocess
import threading

import pytest

from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.kubeconfig import find_kubectl
from tests.integration.helpers import apikey

pytestmark = pytest.mark.integration


def kubectl(cluster: LocalCluster, *args: str) -> list[str]:
    return [find_kubectl(), f"--kubeconfig={cluster.plane.kubeconfig}",
            f"--cache-dir={cluster.workdir / 'kubectl-cache'}", *args]


def test_kubectl_get_watch_prints_full_rows_on_every_update(cluster: LocalCluster) -> None:
    watcher = subprocess.Popen(kubectl(cluster, "get", "ak", "-n", "payments", "-w"),
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    rotated = threading.Event()

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("watched") and line.split()[3:5] == ["kubernetes", "2"]:
                rotated.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        cluster.apply(apikey("watched"))
        cluster.wait_ready("payments", "watched")
        cluster.annotate("payments", "watched", {"apikeys.dev/rotate": "now"})
        assert rotated.wait(30), "\n".join(lines)
    finally:
        watcher.terminate()
        watcher.wait(10)
        reader.join(10)
    out = "\n".join(lines)
    header = lines[0]
    assert header.split()[:4] == ["NAME", "READY", "REASON", "STORE"], header
    # kubectl does not realign the columns of later rows, so rows are read field by field.
    rows = [line.split() for line in lines[1:] if line.startswith("watched")]
    full = [r for r in rows if len(r) >= 6]
    # Every update is a full row: once the key is Ready, the printer columns carry its state
    # (the emulator's watch rows had only NAME and AGE).
    assert any(r[1] == "True" and r[3:5] == ["kubernetes", "1"] for r in full), out
    assert rows[-1][1] == "True" and rows[-1][3:5] == ["kubernetes", "2"], out


def test_the_next_rotation_column_shows_when(cluster: LocalCluster) -> None:
    """A `date` printer column renders a future time as "<invalid>" in kubectl."""
    cluster.apply({"apiVersion": "apikeys.dev/v1alpha1", "kind": "RotationPolicy",
                   "metadata": {"name": "monthly"}, "spec": {"rotateEvery": "30d"}})
    cluster.apply(apikey("scheduled", rotationPolicyRef={"name": "monthly"}))
    body = cluster.wait_for(lambda: (b := cluster.wait_ready("payments", "scheduled")) and
                            b["status"].get("nextRotationTime") and b, what="a schedule")
    table = subprocess.run(kubectl(cluster, "get", "ak", "-n", "payments", "scheduled"),
                           capture_output=True, text=True, check=True, timeout=60).stdout
    assert "<invalid>" not in table, table
    assert body["status"]["nextRotationTime"] in table, table


def test_kubectl_get_events_has_last_seen_and_describe_shows_conditions(
        cluster: LocalCluster) -> None:
    cluster.apply(apikey("described"))
    cluster.wait_ready("payments", "described")
    cluster.wait_for(lambda: "Provisioned" in cluster.event_reasons("payments", "described"),
                     what="the Provisioned event")
    events = subprocess.run(kubectl(cluster, "get", "events", "-n", "payments"),
                            capture_output=True, text=True, check=True, timeout=60).stdout
    header, *rows = events.splitlines()
    assert header.split()[:3] == ["LAST", "SEEN", "TYPE"], header
    provisioned = [r for r in rows if "Provisioned" in r]
    assert provisioned and provisioned[0].split()[0] != "<unknown>", events
    described = subprocess.run(kubectl(cluster, "describe", "ak", "-n", "payments", "described"),
                               capture_output=True, text=True, check=True, timeout=60).stdout
    assert "Conditions:" in described and "Provisioned" in described, described
