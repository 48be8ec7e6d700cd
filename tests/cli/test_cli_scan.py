"""`scan PATH --revoke`: from a leaked key in a file to a revoked key, in one command."""

from __future__ import annotations

import pathlib
import re

import pytest

from apikey_operator.keys import KeyFormat, fingerprint, generate
from apikey_operator.testing.harness import LocalCluster
from tests.cli.helpers import cli, kubeconfig_for, status_of
from tests.integration.helpers import apikey, store_valid_keys

pytestmark = pytest.mark.integration


def test_scan_revoke_revokes_every_live_leaked_key(cluster: LocalCluster,
                                                   tmp_path: pathlib.Path) -> None:
    cluster.apply(apikey("billing", key={"prefix": "bill_"}))
    cluster.apply(apikey("untouched", key={"prefix": "bill_"}))
    cluster.wait_ready("payments", "billing")
    cluster.wait_ready("payments", "untouched")
    leaked = cluster.secret_data("payments", "billing")["api-key"]
    foreign = generate(KeyFormat(length=32, encoding="base62", prefix="bill_"))
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "app" / "settings.py").write_text(f'API_KEY = "{leaked}"\n')
    (repo / "notes.txt").write_text(f"first line\nold key: {foreign}\nagain: {leaked}\n")
    config = kubeconfig_for(cluster)

    result = cli("scan", str(repo), "--revoke", kubeconfig=config, timeout=180)
    assert result.returncode == 1, result.stderr
    assert leaked not in result.stdout and foreign not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        f"{repo}/notes.txt:2: apikey leak ({fingerprint(foreign)})",
        f"{repo}/notes.txt:3: apikey leak ({fingerprint(leaked)})",
        f"{repo}/app/settings.py:1: apikey leak ({fingerprint(leaked)})",
    ]
    assert re.fullmatch(
        rf"revoked {fingerprint(leaked)}: the current key of ApiKey payments/billing "
        r"\(versions 1 revoked, new version 2\) in \d+\.\d{3}s", lines[4]), lines[4]
    assert lines[3] == (f"not ours {fingerprint(foreign)}: no visible ApiKey has a current or "
                        "previous key with this fingerprint (another system's key, or already "
                        "revoked)")
    assert len(lines) == 5
    assert result.stderr.strip() == ("apikey-operator scan: 2 leaked key(s); remove them from "
                                     "the files and their history")
    assert leaked not in cluster.secret_data("payments", "billing").values()
    assert leaked not in store_valid_keys(cluster, "payments", "billing").values()
    assert status_of(cluster, "payments", "untouched")["currentKey"]["version"] == 1

    again = cli("scan", str(repo), "--revoke", kubeconfig=config)
    assert again.returncode == 1
    assert again.stdout.splitlines()[4].startswith(f"not ours {fingerprint(leaked)}: ")
    clean = tmp_path / "clean"
    clean.mkdir()
    nothing = cli("scan", str(clean), "--revoke", kubeconfig=config)
    assert (nothing.returncode, nothing.stdout, nothing.stderr) == (0, "", "")
    missing = cli("scan", str(tmp_path / "absent"), "--revoke", kubeconfig=config)
    assert missing.returncode == 2
    assert missing.stderr == f"apikey-operator: no such file or directory: {tmp_path}/absent\n"
