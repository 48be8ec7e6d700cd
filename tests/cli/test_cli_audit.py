"""`audit`: the inventory with the contract's fields and findings, as a table, JSON or CSV."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import time

import pytest

from apikey_operator.testing.harness import LocalCluster
from tests.cli.helpers import cli, kubeconfig_for
from tests.integration.helpers import apikey, policy

pytestmark = pytest.mark.integration

FIELDS = ["namespace", "name", "store", "storeRef", "policy", "version", "fingerprint",
          "createdAt", "keyAgeSeconds", "lastRotationTime", "nextRotationTime",
          "previousValidUntil", "ready", "owner", "scopes", "findings"]


def test_audit_reports_zombie_old_stalled_and_missing_policy_keys(cluster: LocalCluster) -> None:
    cluster.apply(policy("hourly", rotateEvery="1h", gracePeriod="10m"))
    cluster.apply(policy("strict", rotateEvery="1h", gracePeriod="10m", maxKeyAge="2s"))
    cluster.apply(policy("broken", rotateEvery="1h", gracePeriod="2h"))
    owned = apikey("zombie", scopes=["invoices:read"])
    owned["metadata"]["labels"] = {"apikeys.dev/owner": "team-billing"}
    cluster.apply(owned)
    cluster.apply(apikey("old", rotationPolicyRef={"name": "strict"}))
    cluster.apply(apikey("stalled", rotationPolicyRef={"name": "broken"}))
    cluster.apply(apikey("orphan", rotationPolicyRef={"name": "nowhere"}))
    cluster.apply(apikey("clean", namespace="default", rotationPolicyRef={"name": "hourly"}))
    for namespace, name in (("payments", "zombie"), ("payments", "old"), ("default", "clean")):
        cluster.wait_ready(namespace, name)
    cluster.wait_for(lambda: cluster.condition("payments", "stalled", "Stalled")
                     .get("status") == "True", what="the stalled key")
    cluster.wait_for(lambda: cluster.condition("payments", "orphan", "Scheduled").get("reason")
                     == "PolicyNotFound", what="the orphan key")
    # A copy of the zombie's key in someone else's Secret: found by fingerprint.
    key = cluster.secret_data("payments", "zombie")["api-key"]
    cluster.api.create_object({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "copied", "namespace": "default"}, "data": {
            "env": base64.b64encode(f"BILLING_KEY={key}\n".encode()).decode()}})
    time.sleep(2.5)  # the strict policy's maxKeyAge
    config = kubeconfig_for(cluster)

    result = cli("audit", "-A", "-o", "json", kubeconfig=config)
    assert result.returncode == 0, result.stderr
    assert not cluster.recorder.leaks_in(result.stdout)
    items = json.loads(result.stdout)["items"]
    assert [(i["namespace"], i["name"]) for i in items] == [
        ("default", "clean"), ("payments", "old"), ("payments", "orphan"),
        ("payments", "stalled"), ("payments", "zombie")]
    assert all(list(i) == FIELDS for i in items)
    by_name = {i["name"]: i for i in items}
    codes = {name: [f["code"] for f in i["findings"]] for name, i in by_name.items()}
    assert codes == {"clean": [], "old": ["KeyTooOld"], "orphan": ["PolicyNotFound"],
                     "stalled": ["Stalled"], "zombie": ["NoPolicy", "SharedKey"]}
    zombie = by_name["zombie"]
    status = (cluster.apikey("payments", "zombie") or {})["status"]
    assert zombie["owner"] == "team-billing" and zombie["scopes"] == ["invoices:read"]
    assert zombie["fingerprint"] == status["currentKey"]["fingerprint"]
    assert zombie["storeRef"] == status["storeRef"] and zombie["store"] == "kubernetes"
    assert zombie["version"] == 1 and zombie["ready"] is True and zombie["policy"] is None
    assert zombie["nextRotationTime"] is None and zombie["previousValidUntil"] is None
    assert isinstance(zombie["keyAgeSeconds"], int) and zombie["keyAgeSeconds"] >= 2
    assert zombie["findings"][0] == {
        "severity": "warning", "code": "NoPolicy",
        "message": "no rotationPolicyRef: the key rotates only on request and can live "
                   "forever (a zombie key)"}
    assert zombie["findings"][1]["message"] == ("the key is also stored outside its own Secret, "
                                                "in default/copied")
    old = by_name["old"]["findings"][0]
    assert old["severity"] == "error"
    assert re.fullmatch(r"the current key is \d+s old, older than maxKeyAge 2s of "
                        r"RotationPolicy strict", old["message"]), old
    assert by_name["stalled"]["findings"][0]["severity"] == "error"
    assert by_name["stalled"]["findings"][0]["message"].startswith("InvalidSpec: ")
    assert by_name["clean"]["owner"] is None and by_name["clean"]["nextRotationTime"]

    gate = cli("audit", "-n", "payments", "--fail-on", "warning", kubeconfig=config)
    assert gate.returncode == 1, gate.stderr
    lines = gate.stdout.splitlines()
    assert re.split(r" {3,}", lines[0]) == ["NAMESPACE", "NAME", "OWNER", "POLICY", "VERSION",
                                             "FINGERPRINT", "KEY AGE", "READY", "FINDINGS"]
    # Only the payments namespace's Secrets are read here, so the copy in default is not seen.
    assert [re.split(r" {3,}", line)[-1] for line in lines[1:]] == [
        "KeyTooOld", "PolicyNotFound", "Stalled", "NoPolicy"]
    assert cli("audit", "--fail-on", "error", kubeconfig=config).returncode == 1
    clean = cli("audit", "-n", "default", "--fail-on", "warning", kubeconfig=config)
    assert clean.returncode == 0, clean.stdout
    no_gate = cli("audit", kubeconfig=config)
    assert no_gate.returncode == 0

    table = cli("audit", "-A", "-o", "csv", "-l", "apikeys.dev/owner=team-billing",
                kubeconfig=config)
    assert table.returncode == 0, table.stderr
    rows = list(csv.reader(io.StringIO(table.stdout)))
    assert rows[0] == FIELDS
    assert len(rows) == 2
    row = dict(zip(FIELDS, rows[1], strict=True))
    assert (row["name"], row["owner"], row["ready"], row["scopes"], row["policy"]) == (
        "zombie", "team-billing", "true", "invoices:read", "")
    assert row["findings"] == "warning:NoPolicy warning:SharedKey"
