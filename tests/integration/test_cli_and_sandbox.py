"""The command line and the sandbox, as users run them, against the emulated API."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from apikey_operator.testing.harness import LocalCluster
from tests.integration.helpers import apikey

pytestmark = pytest.mark.integration
BIN = pathlib.Path(sys.executable).parent


def run(*args: str, kubeconfig: pathlib.Path | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


def kubectl(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return run(str(BIN / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), "--cache-dir",
               str(cluster.workdir / "kubectl-cache"), *args)


def test_kubectl_get_and_describe_show_status_and_events(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing", key={"prefix": "bill_"}))
    cluster.wait_ready("payments", "billing")
    cluster.wait_for(lambda: cluster.event_reasons("payments", "billing"), what="an event")
    got = kubectl(cluster, "get", "ak", "-A")
    assert got.returncode == 0, got.stderr
    header, row = got.stdout.splitlines()[:2]
    assert header.split()[:6] == ["NAMESPACE", "NAME", "READY", "REASON", "STORE", "VERSION"]
    assert row.split()[:6] == ["payments", "billing", "True", "Provisioned", "kubernetes", "1"]
    described = kubectl(cluster, "describe", "apikey", "-n", "payments", "billing")
    assert described.returncode == 0, described.stderr
    assert "Provisioned" in described.stdout and "Events:" in described.stdout
    assert re.search(r"Fingerprint:\s+sha256:[0-9a-f]{12}", described.stdout), described.stdout


def test_kubectl_apply_of_an_invalid_apikey_is_refused(cluster: LocalCluster,
                                                       tmp_path: pathlib.Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text("apiVersion: apikeys.dev/v1alpha1\nkind: ApiKey\n"
                        "metadata: {name: bad, namespace: payments}\n"
                        "spec: {key: {length: 8}}\n")
    result = kubectl(cluster, "apply", "-f", str(manifest))
    assert result.returncode != 0
    assert "spec.key.length" in result.stderr
    assert cluster.apikey("payments", "bad") is None


def test_cli_rotate_revoke_and_status(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    exe = str(BIN / "apikey-operator")
    rotated = run(exe, "rotate", "payments/billing", kubeconfig=cluster.kubeconfig)
    assert rotated.returncode == 0, rotated.stderr
    assert "rotate requested" in rotated.stdout
    cluster.wait_for(lambda: cluster.apikey("payments", "billing")["status"]  # type: ignore[index]
                     ["currentKey"]["version"] == 2, what="the rotation")
    revoked = run(exe, "revoke", "payments/billing", kubeconfig=cluster.kubeconfig)
    assert revoked.returncode == 0, revoked.stderr
    cluster.wait_for(lambda: cluster.apikey("payments", "billing")["status"]  # type: ignore[index]
                     ["currentKey"]["version"] == 3, what="the revoke")
    cluster.wait_for(lambda: set(cluster.secret_data("payments", "billing")) == {"api-key"},
                     what="the old keys to be gone")
    status = run(exe, "status", "-A", kubeconfig=cluster.kubeconfig)
    assert status.returncode == 0, status.stderr
    header, row = status.stdout.splitlines()[:2]
    assert header.split()[:6] == ["NAMESPACE", "NAME", "READY", "REASON", "STORE", "VERSION"]
    assert row.split()[:6] == ["payments", "billing", "True", "Provisioned", "kubernetes", "3"]


def test_cli_errors_are_one_line_with_exit_2(cluster: LocalCluster) -> None:
    """More failure cases, and every other verb, are in tests/cli."""
    exe = str(BIN / "apikey-operator")
    missing = run(exe, "rotate", "payments/nope", kubeconfig=cluster.kubeconfig)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "apikey-operator: ApiKey payments/nope not found"
    bare = run(exe, "revoke", "just-a-name", kubeconfig=cluster.kubeconfig)
    assert bare.returncode == 2
    assert bare.stderr.strip() == "apikey-operator: ApiKey default/just-a-name not found"


def test_run_refuses_a_bad_config_with_one_line_per_problem(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("stores:\n  weird: {type: floppy-disk}\n  novault: {type: vault}\n")
    result = run(str(BIN / "apikey-operator"), "run", "--config", str(config))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any("stores.weird" in line and "unknown store type 'floppy-disk'" in line
               for line in lines), lines
    assert any("stores.novault" in line for line in lines), lines
    unreadable = run(str(BIN / "apikey-operator"), "run", "--config", str(tmp_path / "none"))
    assert unreadable.returncode == 2
    assert "cannot be read" in unreadable.stderr


def test_the_sandbox_runs_end_to_end(tmp_path: pathlib.Path) -> None:
    result = run(str(BIN / "apikey-operator"), "sandbox", "--non-interactive", "--workdir",
                 str(tmp_path / "sandbox"), timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "every example key is Ready" in out
    assert "['api-key', 'api-key-previous']" in out
    assert "sandbox: all example keys Ready, rotated and revoked; exiting" in out
    assert out.count("True    Provisioned") >= 3
