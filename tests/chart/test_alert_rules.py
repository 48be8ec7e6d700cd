"""The chart's alert rules (templates/prometheusrule.yaml) checked and unit-tested by promtool.

The PrometheusRule is rendered by `helm template`; its spec.groups is a Prometheus rule file.
`promtool check rules` validates it and `promtool test rules` runs the unit tests in
alert_rules_test.yaml (default values) and alert_rules_custom_test.yaml (CUSTOM values).
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_tools import HERE, Render, promtool_binary
from prometheus_client import CollectorRegistry, generate_latest

from apikey_operator import metrics

pytestmark = pytest.mark.integration

ENABLED: dict[str, Any] = {"metrics": {"prometheusRule": {"enabled": True}}}
CUSTOM: dict[str, Any] = {
    "metrics": {
        "prometheusRule": {
            "enabled": True,
            "rotationOverdueSeconds": 3600,
            "maxKeyAgeSeconds": 86400,
            "previousKeyInUseSeconds": 600,
            "rejectedSpikePerSecond": 0.05,
            "rejectedSpikeFactor": 2,
            "severity": "critical",
        }
    }
}
UNIT_TESTS = {
    "default": (ENABLED, HERE / "alert_rules_test.yaml"),
    "custom": (CUSTOM, HERE / "alert_rules_custom_test.yaml"),
}
ALERTS = {"ApiKeyRotationFailing", "ApiKeyRotationOverdue", "ApiKeyStoreErrors", "ApiKeyTooOld",
          "ApiKeyPolicyFinding", "ApiKeyPreviousKeyStillUsed", "ApiKeyRejectedSpike"}
# Alerts on what consumers' KeyRings export (joined to the operator's apikey_key_info).
CONSUMER_ALERTS = {"ApiKeyPreviousKeyStillUsed", "ApiKeyRejectedSpike"}
KEYRING_METRIC = "apikey_keyring_verifications_total"
RULES_FILE = "apikey-operator-rules.yaml"  # the name both unit-test files load
SCRAPE_LABELS = {"job", "instance"}


def rule_groups(render: Render, values: dict[str, Any]) -> list[dict[str, Any]]:
    (rule,) = [o for o in render(values)["objects"] if o["kind"] == "PrometheusRule"]
    assert set(rule["spec"]) == {"groups"}, "a PrometheusRule spec is a rule file's content"
    groups: list[dict[str, Any]] = copy.deepcopy(rule["spec"]["groups"])
    return groups


def alert_rules(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def write_rules(folder: Path, groups: list[dict[str, Any]]) -> Path:
    path = folder / RULES_FILE
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False), encoding="utf-8")
    return path


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool_binary(), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def unit_test(folder: Path, groups: list[dict[str, Any]], tests: Path | str) -> str:
    """`promtool test rules` of a unit-test file (a path, or its text) against these groups,
    in a folder of their own; returns "exit CODE" and then promtool's output."""
    write_rules(folder, groups)
    test_file = folder / "alert_rules_test.yaml"
    if isinstance(tests, Path):
        shutil.copyfile(tests, test_file)
    else:
        test_file.write_text(tests, encoding="utf-8")
    result = promtool("test", "rules", test_file)
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def exported_metrics() -> dict[str, set[str]]:
    """Each metric family the operator exports (as scraped) and its label names."""
    names = {
        line.split()[2]
        for line in generate_latest(metrics.REGISTRY).decode().splitlines()
        if line.startswith("# TYPE ")
    }
    labels = {
        "apikey_rotations_total": set(metrics.ROTATIONS._labelnames),
        "apikey_revocations_total": set(metrics.REVOCATIONS._labelnames),
        "apikey_store_errors_total": set(metrics.STORE_ERRORS._labelnames),
        "apikey_policy_findings": set(metrics.POLICY_FINDINGS._labelnames),
    }
    # The key-time gauges show their labels only with a key observed: observe one in a
    # collector of our own, not the operator's.
    times = metrics._KeyTimes()
    now = datetime.now().astimezone()
    times.created[("ns", "n")] = now - timedelta(seconds=1)
    times.next_rotation[("ns", "n")] = now + timedelta(days=1)
    times.fingerprints[("ns", "n")] = {"current": "sha256:000000000000"}
    times.grace_end[("ns", "n")] = now + timedelta(hours=1)
    registry = CollectorRegistry()
    registry.register(times)
    for family in registry.collect():
        labels[family.name] = set(family.samples[0].labels)
    exported = {name: labels.get(name, set()) for name in names}
    # What the consumers' KeyRings export (scraped from them, not from the operator).
    exported[KEYRING_METRIC] = {"fingerprint", "role", "result"}
    return exported


@pytest.mark.parametrize("values", [ENABLED, CUSTOM], ids=["default", "custom"])
def test_promtool_check_rules(render: Render, tmp_path: Path, values: dict[str, Any]) -> None:
    path = write_rules(tmp_path, rule_groups(render, values))
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(ALERTS)} rules found" in output


def test_the_chart_alerts_on_what_the_operator_exports(render: Render) -> None:
    alerts = alert_rules(rule_groups(render, ENABLED))
    assert set(alerts) == ALERTS
    exported = exported_metrics()
    for name, rule in alerts.items():
        used = set(re.findall(r"\bapikey_[a-z_]+", rule["expr"]))
        assert used and used <= set(exported), f"{name} uses {sorted(used - set(exported))}"
        assert (KEYRING_METRIC in used) == (name in CONSUMER_ALERTS)
        # A join groups by the labels of all the metrics it joins (and the consumers' scrape
        # labels, which say which consumer verified what).
        known = set().union(*(exported[m] for m in used))
        if name in CONSUMER_ALERTS:
            known |= SCRAPE_LABELS
        for by in re.findall(r"\bby \(([^)]*)\)", rule["expr"]):
            grouped = {label.strip() for label in by.split(",")}
            if name in CONSUMER_ALERTS:
                assert grouped <= known, f"{name} groups by {grouped - known}"
                continue
            for metric in used:
                assert grouped <= exported[metric], f"{name} groups {metric} by {grouped}"
        assert rule["labels"] == {"severity": "warning"}
        assert set(rule["annotations"]) == {"summary", "description"}


@pytest.mark.parametrize("name", UNIT_TESTS)
def test_unit_test_inputs_are_series_the_operator_exports(name: str) -> None:
    exported = exported_metrics()
    tests = yaml.safe_load(UNIT_TESTS[name][1].read_text(encoding="utf-8"))
    series = [s["series"] for group in tests["tests"] for s in group["input_series"]]
    assert series
    for selector in series:
        match = re.fullmatch(r"(\w+)\{(.*)\}", selector)
        assert match, selector
        metric, body = match.groups()
        labels = set(re.findall(r'(\w+)="', body))
        assert metric in exported, f"{metric} is not exported by the operator"
        assert labels == exported[metric] | SCRAPE_LABELS, selector


@pytest.mark.parametrize("name", UNIT_TESTS)
def test_every_alert_has_a_firing_and_a_quiet_case(render: Render, name: str) -> None:
    values, path = UNIT_TESTS[name]
    alerts = alert_rules(rule_groups(render, values))
    tests = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [RULES_FILE]
    cases = [case for group in tests["tests"] for case in group["alert_rule_test"]]
    assert {case["alertname"] for case in cases} <= set(alerts)
    if name == "default":
        for alert in alerts:
            outcomes = {bool(c["exp_alerts"]) for c in cases if c["alertname"] == alert}
            assert outcomes == {True, False}, f"{alert}: needs a firing and a quiet case"
    else:
        # The custom thresholds and severity: every alert fires with them.
        fired = {c["alertname"] for c in cases if c["exp_alerts"]}
        assert fired == set(alerts)
        for case in cases:
            for expected in case["exp_alerts"]:
                assert expected["exp_labels"]["severity"] == "critical"


@pytest.mark.parametrize("name", UNIT_TESTS)
def test_promtool_unit_tests_pass(render: Render, tmp_path: Path, name: str) -> None:
    values, path = UNIT_TESTS[name]
    output = unit_test(tmp_path, rule_groups(render, values), path)
    assert output.startswith("exit 0\n"), output
    assert "SUCCESS" in output and "FAILED" not in output


def test_promtool_fails_on_a_wrong_expectation(render: Render, tmp_path: Path) -> None:
    text = (HERE / "alert_rules_test.yaml").read_text(encoding="utf-8")
    assert "severity: warning" in text
    wrong = text.replace("severity: warning", "severity: critical", 1)
    output = unit_test(tmp_path, rule_groups(render, ENABLED), wrong)
    assert output.startswith("exit 1\n"), output
    assert "FAILED" in output and "ApiKeyRotationFailing" in output


# A finding is 1 while it holds and absent otherwise: ApiKeyPolicyFinding has no threshold.
# The consumer alerts compare more than one threshold; their quiet cases sit beside them.
@pytest.mark.parametrize("alert", sorted(ALERTS - {"ApiKeyPolicyFinding"} - CONSUMER_ALERTS))
def test_the_quiet_cases_catch_a_loose_threshold(
    render: Render, tmp_path: Path, alert: str
) -> None:
    """Each alert's strict `>` made `>=`: the default unit tests must notice."""
    groups = rule_groups(render, ENABLED)
    rule = alert_rules(groups)[alert]
    assert rule["expr"].count(" > ") == 1, rule["expr"]
    rule["expr"] = rule["expr"].replace(" > ", " >= ")
    output = unit_test(tmp_path, groups, HERE / "alert_rules_test.yaml")
    assert output.startswith("exit 1\n"), output
    failed = set(re.findall(r"alertname: (\w+)", output))
    assert failed == {alert}, output
