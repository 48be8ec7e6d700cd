"""Suite-wide: every key generated during the run is looked for in logs, Events, status,
metadata and metrics at the end (see tests.support.faults_leakscan), and the test log
names the Kubernetes control plane the suite runs on."""

from __future__ import annotations

import subprocess

import pytest

from apikey_operator.testing.controlplane import find_assets
from apikey_operator.testing.servers import ServerError

# The store fixtures (OpenBao, moto, Key Vault) for every tier that needs a real store.
pytest_plugins = ["tests.support.faults_leakscan", "tests.support.fixtures_stores"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What each binary says of its own version (not what we meant to build)."""
    try:
        assets = find_assets()
    except ServerError as exc:
        return [f"control plane: not built ({exc})"]
    lines = []
    for component in ("kube-apiserver", "kube-controller-manager", "etcd"):
        out = subprocess.run([assets[component], "--version"], capture_output=True, text=True,
                             timeout=30, check=False).stdout.strip().splitlines()
        lines.append(f"{component}: {out[0] if out else 'unknown'} ({assets[component]})")
    return lines


def pytest_sessionstart(session: pytest.Session) -> None:
    # `pytest -q` (as `make test` runs it) hides report headers; the log still names the server.
    config = session.config
    if config.option.verbose < 0 and not hasattr(config, "workerinput"):
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            for line in pytest_report_header(config):
                reporter.write_line(line)
