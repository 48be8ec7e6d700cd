"""rotate, revoke and status as kubectl users expect them (bare names, -n, -A, -l)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from apikey_operator.presentation import format_status_detail, human_duration
from apikey_operator.testing.harness import LocalCluster
from tests.cli.helpers import cli, kubeconfig_for, status_of
from tests.integration.helpers import apikey, policy

pytestmark = pytest.mark.integration

HEADER = ["NAMESPACE", "NAME", "READY", "REASON", "STORE", "VERSION", "KEY AGE",
          "NEXT ROTATION", "GRACE ENDS", "AGE"]


def columns(line: str) -> list[str]:
    return re.split(r" {3,}", line.strip())


def test_rotate_and_revoke_take_bare_names_in_the_contexts_namespace(
        cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    config = kubeconfig_for(cluster)
    rotated = cli("rotate", "billing", kubeconfig=config)
    assert rotated.returncode == 0, rotated.stderr
    assert re.fullmatch(r"apikey payments/billing: rotate requested \(apikeys\.dev/rotate="
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\)\n", rotated.stdout)
    cluster.wait_for(lambda: status_of(cluster, "payments", "billing")["currentKey"]
                     ["version"] == 2, what="the rotation")
    in_default = kubeconfig_for(cluster, "default")
    revoked = cli("revoke", "-n", "payments", "billing", kubeconfig=in_default)
    assert revoked.returncode == 0, revoked.stderr
    cluster.wait_for(lambda: status_of(cluster, "payments", "billing")["currentKey"]
                     ["version"] == 3, what="the revoke")
    current = status_of(cluster, "payments", "billing")["currentKey"]["fingerprint"]
    by_print = cli("revoke", "--fingerprint", current, kubeconfig=in_default)
    assert by_print.returncode == 0, by_print.stderr
    assert by_print.stdout.startswith("apikey payments/billing: revoke requested (")
    assert by_print.stdout.endswith(f"; its current key has fingerprint {current}\n")
    cluster.wait_for(lambda: status_of(cluster, "payments", "billing")["currentKey"]
                     ["version"] == 4, what="the revoke by fingerprint")
    cluster.wait_for(lambda: set(cluster.secret_data("payments", "billing")) == {"api-key"},
                     what="the old keys to be gone")


def test_status_table_columns_mean_what_kubectls_mean(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "hourly"}))
    cluster.apply(policy("hourly", rotateEvery="1h", gracePeriod="10m"))
    cluster.apply(apikey("other", namespace="default"))
    labelled = apikey("labelled")
    labelled["metadata"]["labels"] = {"team": "billing"}
    cluster.apply(labelled)
    for namespace, name in (("payments", "billing"), ("default", "other"),
                            ("payments", "labelled")):
        cluster.wait_ready(namespace, name)
    config = kubeconfig_for(cluster)
    everywhere = cli("status", "-A", kubeconfig=config)
    assert everywhere.returncode == 0, everywhere.stderr
    lines = everywhere.stdout.splitlines()
    assert columns(lines[0]) == HEADER
    rows = [columns(line) for line in lines[1:]]
    assert [r[:2] for r in rows] == [["default", "other"], ["payments", "billing"],
                                     ["payments", "labelled"]]
    billing = rows[1]
    assert billing[2:6] == ["True", "Provisioned", "kubernetes", "1"]
    assert re.fullmatch(r"\d+s", billing[6]) and re.fullmatch(r"\d+s", billing[9])
    assert re.fullmatch(r"in (59m|\d+m\d*s?|1h)", billing[7]), billing
    assert billing[8] == "-"
    assert rows[0][7] == "-"  # no policy, no next rotation
    here = cli("status", kubeconfig=config)
    assert here.returncode == 0, here.stderr
    assert columns(here.stdout.splitlines()[0]) == HEADER[1:]
    assert [columns(line)[0] for line in here.stdout.splitlines()[1:]] == ["billing",
                                                                            "labelled"]
    selected = cli("status", "-l", "team=billing", kubeconfig=config)
    assert [columns(line)[0] for line in selected.stdout.splitlines()[1:]] == ["labelled"]
    unselected = cli("status", "-A", "-l", "team!=billing,!nothing", kubeconfig=config)
    assert [columns(line)[1] for line in unselected.stdout.splitlines()[1:]] == ["other",
                                                                                  "billing"]
    empty = cli("status", "-n", "apikey-operator", kubeconfig=config)
    assert empty.returncode == 0
    assert (empty.stdout, empty.stderr) == ("", "No ApiKeys found in apikey-operator namespace.\n")


def test_status_name_is_a_detail_view(cluster: LocalCluster) -> None:
    cluster.apply(policy("hourly", rotateEvery="1h", gracePeriod="10m"))
    cluster.apply(apikey("billing", rotationPolicyRef={"name": "hourly"},
                         scopes=["invoices:read"]))
    cluster.wait_ready("payments", "billing")
    config = kubeconfig_for(cluster)
    assert cli("rotate", "billing", kubeconfig=config).returncode == 0
    cluster.wait_for(lambda: "Rotated" in cluster.event_reasons("payments", "billing"),
                     what="the rotation's Event")
    status = status_of(cluster, "payments", "billing")
    detail = cli("status", "payments/billing", kubeconfig=config)
    assert detail.returncode == 0, detail.stderr
    out = detail.stdout
    assert not cluster.recorder.leaks_in(out)
    lines = out.splitlines()
    assert lines[0] == "Name:                 billing"
    assert lines[1] == "Namespace:            payments"
    assert f"Store ref:            {status['storeRef']}" in lines
    assert "Rotation policy:      hourly" in lines
    assert "Scopes:               invoices:read" in lines
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (f"  Ready: True, Reason: {ready['reason']}, Message: {ready['message']}"
            in lines)
    current, previous = status["currentKey"], status["previousKey"]
    at = lines.index("Current key:")
    assert lines[at + 1] == f"  Version:            {current['version']}"
    assert lines[at + 2] == f"  Fingerprint:        {current['fingerprint']}"
    assert lines[at + 3].startswith(f"  Created at:         {current['createdAt']} (")
    at = lines.index("Previous key:")
    assert lines[at + 2] == f"  Fingerprint:        {previous['fingerprint']}"
    assert re.fullmatch(rf"  Valid until:        {previous['validUntil']} \(in \d+m\d*s?\)",
                        lines[at + 3]), lines[at + 3]
    events = lines[lines.index("Events:") + 1:]
    assert columns(events[0]) == ["Type", "Reason", "Age", "Message"]
    reasons = [columns(line)[1] for line in events[1:]]
    assert reasons[:2] == ["Provisioned", "Rotated"], events


def test_the_detail_view_shows_a_queued_rotation() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    item = {"metadata": {"name": "billing", "namespace": "payments",
                         "creationTimestamp": "2026-01-01T03:04:05Z"},
            "spec": {},
            "status": {"queuedRotation": {"trigger": "rotate",
                                          "requestedAt": "2026-01-02T03:00:00Z",
                                          "runsAt": "2026-01-02T04:04:05Z"}}}
    lines = format_status_detail(item, [], now).splitlines()
    at = lines.index("Queued rotation:")
    assert lines[at + 1:at + 4] == ["  Trigger:            rotate",
                                    "  Requested at:       2026-01-02T03:00:00Z",
                                    "  Runs at:            2026-01-02T04:04:05Z (in 60m)"]
    assert "Created at:           2026-01-01T03:04:05Z (24h ago)" in lines
    assert "  <none> (not provisioned yet)" in lines


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (119, "119s"), (120, "2m"), (150, "2m30s"), (600, "10m"), (3 * 3600 - 1, "179m"),
    (3 * 3600 + 120, "3h2m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (49 * 3600, "2d1h"),
    (8 * 86400, "8d"), (800 * 86400, "2y70d"), (3000 * 86400, "8y")])
def test_ages_read_like_kubectls(seconds: int, text: str) -> None:
    assert human_duration(timedelta(seconds=seconds).total_seconds()) == text
