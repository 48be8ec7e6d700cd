"""Every failure is one line on stderr naming its cause, with the contract's exit codes."""

from __future__ import annotations

import pathlib

import pytest

from apikey_operator.testing.harness import LocalCluster
from tests.cli.helpers import cli, dead_kubeconfig, kubeconfig_for, one_line
from tests.integration.helpers import apikey

pytestmark = pytest.mark.integration


def test_version_and_usage_errors() -> None:
    version = cli("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == "apikey-operator 0.1.0"
    unknown = cli("frobnicate")
    assert unknown.returncode == 2
    assert one_line(unknown).startswith("apikey-operator: error: argument COMMAND: invalid choice")
    missing = cli("rotate")
    assert missing.returncode == 2
    assert one_line(missing) == ("apikey-operator rotate: error: the following arguments are "
                                 "required: [NAMESPACE/]NAME (see apikey-operator rotate --help)")
    both = cli("revoke", "billing", "--fingerprint", "sha256:0123456789ab")
    assert both.returncode == 2
    assert one_line(both) == ("apikey-operator: revoke takes either [NAMESPACE/]NAME or "
                              "--fingerprint sha256:...")


@pytest.mark.parametrize("verb", [("status",), ("audit",), ("rotate", "billing"),
                                  ("revoke", "billing"), ("drill", "billing"),
                                  ("revoke", "--fingerprint", "sha256:0123456789ab"), ("run",)])
def test_without_a_kubeconfig_every_verb_names_the_missing_file(
        verb: tuple[str, ...], tmp_path: pathlib.Path) -> None:
    result = cli(*verb, env={"HOME": str(tmp_path)})
    assert result.returncode == 2
    assert one_line(result) == (
        f"apikey-operator: no kubeconfig: {tmp_path}/.kube/config does not exist, KUBECONFIG "
        "is not set and this is not a pod (pass --kubeconfig)")
    named = cli(*verb, kubeconfig=tmp_path / "nowhere.yaml")
    assert named.returncode == 2
    assert one_line(named) == f"apikey-operator: kubeconfig {tmp_path}/nowhere.yaml does not exist"


@pytest.mark.parametrize("verb", [("status",), ("status", "billing"), ("audit", "-A"),
                                  ("rotate", "payments/billing"), ("drill", "billing"),
                                  ("revoke", "--fingerprint", "sha256:0123456789ab")])
def test_a_dead_server_is_named_by_its_address(verb: tuple[str, ...],
                                              tmp_path: pathlib.Path) -> None:
    config, server = dead_kubeconfig(tmp_path / "kubeconfig")
    result = cli(*verb, "--kubeconfig", str(config))
    assert result.returncode == 2
    line = one_line(result)
    assert line.startswith(f"apikey-operator: cannot connect to the Kubernetes API server at "
                           f"{server} ("), line
    assert line.endswith(": ConnectError: connection refused)"), line
    unknown_context = cli(*verb, "--kubeconfig", str(config), "--context", "prod")
    assert unknown_context.returncode == 2
    assert one_line(unknown_context) == (f"apikey-operator: context 'prod' not found in "
                                         f"kubeconfig {config}")


def test_run_refuses_to_start_without_a_reachable_server(tmp_path: pathlib.Path) -> None:
    config, server = dead_kubeconfig(tmp_path / "kubeconfig")
    result = cli("run", "--standalone", kubeconfig=config, timeout=60)
    assert result.returncode == 2
    assert one_line(result) == (
        f"apikey-operator: cannot connect to the Kubernetes API server at {server} "
        "(reading RotationPolicy apikey-operator-preflight: ConnectError: connection refused)")


def test_unknown_keys_malformed_names_and_fingerprints(cluster: LocalCluster) -> None:
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing")
    config = kubeconfig_for(cluster)
    for verb in ("rotate", "revoke", "status", "drill"):
        missing = cli(verb, "nope", kubeconfig=config)
        assert missing.returncode == 2, (verb, missing.stdout)
        assert one_line(missing) == "apikey-operator: ApiKey payments/nope not found"
    elsewhere = cli("rotate", "default/billing", kubeconfig=config)
    assert elsewhere.returncode == 2
    assert one_line(elsewhere) == "apikey-operator: ApiKey default/billing not found"
    malformed = cli("rotate", "a/b/c", kubeconfig=config)
    assert malformed.returncode == 2
    assert one_line(malformed) == "apikey-operator: expected [NAMESPACE/]NAME, got 'a/b/c'"
    clash = cli("rotate", "payments/billing", "-n", "default", kubeconfig=config)
    assert clash.returncode == 2
    assert one_line(clash) == ("apikey-operator: 'payments/billing' names namespace 'payments' "
                               "but -n says 'default'")
    bad = cli("revoke", "--fingerprint", "sha256:XYZ", kubeconfig=config)
    assert bad.returncode == 2
    assert one_line(bad) == ("apikey-operator: malformed fingerprint 'sha256:XYZ': expected "
                             "sha256: and 12 lowercase hex digits, as status and `scan` print "
                             "them")
    nobody = cli("revoke", "--fingerprint", "sha256:0123456789ab", kubeconfig=config)
    assert nobody.returncode == 2
    assert one_line(nobody) == (
        "apikey-operator: no ApiKey in any namespace has a current or previous key with "
        "fingerprint sha256:0123456789ab (not one of ours, or already revoked)")
    unconfigured = cli("drill", "billing", "--config", str(cluster.workdir / "none.yaml"),
                       kubeconfig=config)
    assert unconfigured.returncode == 2
    assert one_line(unconfigured).startswith("apikey-operator: config: config file ")
    status = cluster.apikey("payments", "billing") or {}
    assert status["status"]["currentKey"]["version"] == 1, "a failed command changed nothing"
