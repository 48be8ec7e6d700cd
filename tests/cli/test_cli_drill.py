"""`drill`: a measured emergency revoke, read back from the Secret and the store itself."""

from __future__ import annotations

import json
import pathlib
import re
from datetime import datetime
from typing import Any

import pytest
import yaml

from apikey_operator.kube import event_time
from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.kubelet import SecretVolume, SecretVolumeSync
from tests.cli.helpers import cli, kubeconfig_for, one_line, status_of
from tests.client.helpers import example_service
from tests.integration.helpers import apikey, store_valid_keys

pytestmark = pytest.mark.integration


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _revoked_event(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return cluster.wait_for(lambda: next((e for e in cluster.events("payments", name)
                                          if e.get("reason") == "Revoked"), None),
                            what="the Revoked Event")


def _check_against_events(cluster: LocalCluster, name: str, doc: dict[str, Any]) -> None:
    """The drill's figures agree with the Events' timestamps (which have whole seconds)."""
    event = _revoked_event(cluster, name)
    since_request = (_at(event_time(event)) - _at(doc["requestedAt"])).total_seconds()
    assert since_request > -1.0, (event_time(event), doc)
    assert abs(since_request - doc["seconds"]["storeRevoked"]) < 2.0, (event_time(event), doc)
    assert f"{doc['revokedVersions'][0]}" in event["message"]


def test_drill_measures_each_step_of_an_emergency_revoke(cluster: LocalCluster,
                                                         tmp_path: pathlib.Path) -> None:
    cluster.apply(apikey("billing", key={"prefix": "bill_"}))
    cluster.wait_ready("payments", "billing")
    config = kubeconfig_for(cluster)
    result = cli("drill", "billing", "-o", "json", kubeconfig=config, timeout=180)
    assert result.returncode == 0, result.stderr
    assert not cluster.recorder.leaks_in(result.stdout + result.stderr)
    doc = json.loads(result.stdout)
    assert list(doc) == ["namespace", "name", "revokedVersions", "newVersion", "requestedAt",
                         "seconds"]
    assert (doc["namespace"], doc["name"], doc["revokedVersions"], doc["newVersion"]) == (
        "payments", "billing", [1], 2)
    seconds = doc["seconds"]
    assert set(seconds) == {"newKeyInSecret", "oldKeyGoneFromSecret", "secretUpdated",
                            "storeRevoked", "total"}
    assert 0 < seconds["newKeyInSecret"] <= seconds["secretUpdated"] <= seconds["total"] < 60
    assert seconds["total"] == max(seconds["secretUpdated"], seconds["storeRevoked"])
    _check_against_events(cluster, "billing", doc)
    status = status_of(cluster, "payments", "billing")
    assert status["currentKey"]["version"] == 2 and "previousKey" not in status
    assert set(store_valid_keys(cluster, "payments", "billing")) == {2}
    assert set(cluster.secret_data("payments", "billing")) == {"api-key"}

    # The table form, with a service that accepts keys through KeyRing.
    volume = SecretVolume(tmp_path / "pod")
    sync = SecretVolumeSync(volume, lambda: (cluster.secret("payments", "billing") or {})
                            .get("data"), period=0.1)
    with sync, example_service(volume.directory, tmp_path / "service.log") as base:
        table = cli("drill", "payments/billing", "--verify", f"{base}/invoices",
                    kubeconfig=config, timeout=180)
    assert table.returncode == 0, table.stderr + table.stdout
    assert not cluster.recorder.leaks_in(table.stdout)
    lines = table.stdout.splitlines()
    assert re.fullmatch(r"Drill: emergency revoke of ApiKey payments/billing, requested at "
                        r"\S+Z", lines[0])
    assert lines[1] == "Revoked versions: 2; new version: 3"
    assert re.split(r" {3,}", lines[2]) == ["STEP", "SECONDS"]
    steps = [re.split(r" {3,}", line) for line in lines[3:]]
    assert [s[0] for s in steps] == ["new key in the Secret", "old key gone from the Secret",
                                     "old key revoked in the store",
                                     "service accepts new key, refuses old", "total"]
    assert all(re.fullmatch(r"\d+\.\d{3}", s[1]) for s in steps)
    assert float(steps[-1][1]) == max(float(s[1]) for s in steps)


def test_a_drill_that_cannot_complete_reports_the_failed_step(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    cluster.stop_operator_thread()
    result = cli("drill", "billing", "-o", "json", "--timeout", "3",
                 kubeconfig=kubeconfig_for(cluster))
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert doc["failed"]["step"] == "newKeyInSecret"
    assert doc["failed"]["message"].startswith("not done within 3s; Ready=True Provisioned")
    assert doc["failed"]["message"].endswith(
        "the operator has not acted on the request (is it running?)")
    assert "total" not in doc["seconds"]
    line = one_line(result)
    assert line.startswith("apikey-operator: drill of payments/billing failed at step "
                           "newKeyInSecret: not done within 3s")


@pytest.mark.parametrize("store", ["vault", "aws"])
def test_drill_reads_the_revoke_back_from_each_store(store: str, request: pytest.FixtureRequest,
                                                     tmp_path: pathlib.Path) -> None:
    backend = request.getfixturevalue(f"store_backend_{store}")
    config_file = tmp_path / "operator.yaml"
    config_file.write_text(yaml.safe_dump({"stores": {store: backend.config()}}))
    with LocalCluster(stores={store: backend.config()}) as cluster:
        cluster.apply(apikey("billing", store=store))
        cluster.wait_ready("payments", "billing", timeout=60)
        config = kubeconfig_for(cluster)
        unconfigured = cli("drill", "billing", kubeconfig=config)
        assert unconfigured.returncode == 2
        assert one_line(unconfigured) == (
            f"apikey-operator: store {store!r} of ApiKey payments/billing is not in the "
            "operator config: pass --config FILE (or set APIKEY_OPERATOR_CONFIG) to read it")
        result = cli("drill", "billing", "-o", "json", "--config", str(config_file),
                     kubeconfig=config, timeout=180)
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert (doc["revokedVersions"], doc["newVersion"]) == ([1], 2)
        assert doc["seconds"]["storeRevoked"] > 0
        _check_against_events(cluster, "billing", doc)
        cluster.stop_operator_thread()
