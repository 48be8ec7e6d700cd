"""Every ```sh block of docs/runbooks/ runs, in order, against the real control plane.

Each runbook has a scenario here that sets up what the runbook is for (a zombie key, a
leak, a store outage, a StoreConflict after a Retain deletion, an operator token to
rotate). A block's info string may say `exit=N` (the exit status it must have) and
`hook=NAME` (a scenario step to run first, e.g. the store coming back).
"""

from __future__ import annotations

import base64
import copy
import os
import pathlib
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from apikey_operator.testing.harness import APIKEYS, SECRETS, LocalCluster
from apikey_operator.testing.kubelet import SecretVolume, SecretVolumeSync
from tests.cli.helpers import BIN, kubeconfig_for, status_of
from tests.integration.helpers import apikey, store_valid_keys
from tests.support.store_backends import VaultBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
EXAMPLES = ROOT / "examples"
FENCE = re.compile(r"^```(\S+)([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


@dataclass
class Block:
    language: str
    options: dict[str, str]
    code: str
    line: int


def blocks(path: pathlib.Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        options = dict(word.split("=", 1) for word in match.group(2).split() if "=" in word)
        found.append(Block(match.group(1), options, match.group(3),
                           text.count("\n", 0, match.start()) + 1))
    return found


@dataclass
class Scenario:
    env: dict[str, str] = field(default_factory=dict)
    hooks: dict[str, Callable[[], None]] = field(default_factory=dict)
    # Example values in the text -> the real ones, computed when the block runs.
    substitutions: dict[str, Callable[[], str]] = field(default_factory=dict)


def run_runbook(name: str, cluster: LocalCluster, workdir: pathlib.Path,
                scenario: Scenario) -> list[subprocess.CompletedProcess[str]]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("APIKEY_OPERATOR_CONFIG", "POD_NAMESPACE")}
    env.update({"KUBECONFIG": str(kubeconfig_for(cluster)), "HOME": str(workdir),
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}, **scenario.env)
    results = []
    ran = 0
    for block in blocks(RUNBOOKS / name):
        if block.language != "sh":
            continue
        ran += 1
        hook = block.options.get("hook")
        if hook is not None:
            scenario.hooks[hook]()
        code = block.code
        for example, real in scenario.substitutions.items():
            if example in code:
                code = code.replace(example, real())
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=workdir, env=env,
                                capture_output=True, text=True, timeout=240, check=False)
        expected = int(block.options.get("exit", "0"))
        assert result.returncode == expected, (
            f"{name}:{block.line}: exit {result.returncode}, expected {expected}\n{code}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
        leaks = cluster.recorder.leaks_in(result.stdout + result.stderr)
        assert not leaks, f"{name}:{block.line} printed a key: {leaks}"
        results.append(result)
    assert ran, f"{name} has no sh block"
    return results


def example(name: str, **changes: Any) -> dict[str, Any]:
    """An object of examples/ by name, with spec fields changed (None removes one)."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc["metadata"]["name"] == name:
                body = copy.deepcopy(doc)
                for key, value in changes.items():
                    if value is None:
                        body["spec"].pop(key, None)
                    else:
                        body["spec"][key] = value
                return body
    raise KeyError(name)


def _payments(cluster: LocalCluster) -> None:
    cluster.api.ensure_namespace("payments", {"env": "prod"})
    cluster.apply(example("standard-30d"))


def test_every_runbook_has_a_scenario() -> None:
    runbooks = {p.name for p in RUNBOOKS.glob("*.md")} - {"README.md"}
    tested = {name.removeprefix("test_runbook_").replace("_", "-") + ".md"
              for name in globals() if name.startswith("test_runbook_")}
    assert runbooks == tested


def test_runbook_rotation(cluster: LocalCluster, tmp_path: pathlib.Path) -> None:
    _payments(cluster)
    cluster.apply(example("billing-client", rotationPolicyRef=None))
    cluster.wait_ready("payments", "billing-client")
    results = run_runbook("rotation.md", cluster, tmp_path, Scenario())
    assert "NoPolicy" in results[0].stdout
    status = status_of(cluster, "payments", "billing-client")
    assert status["currentKey"]["version"] == 2 and status["previousKey"]
    assert status["nextRotationTime"]


def test_runbook_leaked_key(cluster: LocalCluster, tmp_path: pathlib.Path) -> None:
    _payments(cluster)
    cluster.apply(example("billing-client"))
    cluster.wait_ready("payments", "billing-client")
    leaked = cluster.secret_data("payments", "billing-client-key")["api-key"]
    (tmp_path / "leak").mkdir()
    (tmp_path / "leak" / "app.env").write_text(f"BILLING_API_KEY={leaked}\n")

    def current_fingerprint() -> str:
        return str(status_of(cluster, "payments", "billing-client")["currentKey"]["fingerprint"])

    results = run_runbook("leaked-key.md", cluster, tmp_path, Scenario(
        substitutions={"sha256:1f2e3d4c5b6a": current_fingerprint}))
    assert "revoked sha256:" in results[1].stdout
    assert leaked not in cluster.secret_data("payments", "billing-client-key").values()
    assert leaked not in store_valid_keys(cluster, "payments", "billing-client").values()
    assert "previousKey" not in status_of(cluster, "payments", "billing-client")


def test_runbook_incident_response(cluster: LocalCluster, tmp_path: pathlib.Path) -> None:
    _payments(cluster)
    cluster.apply(example("billing-client"))
    cluster.apply(apikey("orphan", rotationPolicyRef={"name": "deleted-policy"}))
    cluster.wait_ready("payments", "billing-client")
    cluster.wait_for(lambda: cluster.condition("payments", "orphan", "Scheduled")
                     .get("reason") == "PolicyNotFound", what="the orphan key")
    results = run_runbook("incident-response.md", cluster, tmp_path, Scenario())
    assert "PolicyNotFound" in results[2].stdout
    assert '"current"' in results[3].stdout


def _wait_gone(cluster: LocalCluster, name: str) -> None:
    cluster.api.delete_object(APIKEYS, "payments", name)
    cluster.wait_for(lambda: cluster.apikey("payments", name) is None, timeout=60,
                     what=f"ApiKey {name} to be deleted")


def _store_conflict(cluster: LocalCluster, body: dict[str, Any]) -> None:
    _wait_gone(cluster, body["metadata"]["name"])
    cluster.apply(body)
    cluster.wait_reason("payments", body["metadata"]["name"], "StoreConflict", timeout=60)


def test_runbook_store_conflict(cluster: LocalCluster, tmp_path: pathlib.Path) -> None:
    _payments(cluster)
    body = example("billing-client", deletionPolicy="Retain")
    cluster.apply(body)
    cluster.wait_ready("payments", "billing-client")
    retained = cluster.secret_data("payments", "billing-client-key")["api-key"]
    _store_conflict(cluster, body)

    def conflict_again() -> None:
        assert cluster.secret_data("payments", "billing-client-key")["api-key"] == retained
        _store_conflict(cluster, body)

    run_runbook("store-conflict.md", cluster, tmp_path,
                Scenario(hooks={"conflict-again": conflict_again}))
    assert cluster.secret_data("payments", "billing-client-key")["api-key"] != retained
    assert status_of(cluster, "payments", "billing-client")["currentKey"]["version"] == 1


@pytest.fixture
def vault_cluster(store_backend_vault: VaultBackend) -> Iterator[LocalCluster]:
    with LocalCluster(stores={"vault": store_backend_vault.config()},
                      start_operator=False) as local:
        yield local
        local.stop_operator_thread()


def _vault_env(backend: VaultBackend) -> dict[str, str]:
    address = backend.server.address
    return {"VAULT_ADDR": address, "BAO_ADDR": address, "VAULT_TOKEN": backend.server.token,
            "BAO_TOKEN": backend.server.token}


def test_runbook_store_outage(vault_cluster: LocalCluster, store_backend_vault: VaultBackend,
                              tmp_path: pathlib.Path) -> None:
    cluster, proxy = vault_cluster, store_backend_vault.proxy
    assert proxy is not None
    cluster.start_operator_thread()
    _payments(cluster)
    cluster.apply(example("billing-client", store="vault"))
    cluster.wait_ready("payments", "billing-client", timeout=60)
    proxy.set_mode("refuse")
    cluster.annotate("payments", "billing-client", {"apikeys.dev/rotate": "during-outage"})
    cluster.wait_reason("payments", "billing-client", "StoreUnavailable", timeout=60)
    results = run_runbook("store-outage.md", cluster, tmp_path, Scenario(
        env=_vault_env(store_backend_vault),
        hooks={"store-back": lambda: proxy.set_mode("forward")}))
    assert "StoreUnavailable" in results[0].stdout
    assert status_of(cluster, "payments", "billing-client")["currentKey"]["version"] == 2


def test_runbook_operator_credentials(vault_cluster: LocalCluster,
                                      store_backend_vault: VaultBackend,
                                      tmp_path: pathlib.Path) -> None:
    cluster, backend = vault_cluster, store_backend_vault
    vault = backend.client()
    vault.sys.create_or_update_policy(name="apikey-operator", policy=(
        f'path "{backend.mount}/*" {{ capabilities = ["create", "read", "update", "delete", '
        '"list", "patch"] }'))
    old = vault.auth.token.create(policies=["apikey-operator"], ttl="1h")["auth"]["client_token"]
    cluster.api.create_object({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "apikey-operator-vault-token", "namespace": "apikey-operator"},
        "data": {"token": base64.b64encode(old.encode()).decode()}})
    volume = SecretVolume(tmp_path / "token-volume")
    sync = SecretVolumeSync(volume, lambda: (cluster.api.get_object(
        SECRETS, "apikey-operator", "apikey-operator-vault-token") or {}).get("data"),
        period=0.1)
    with sync:
        cluster.stores = {"vault": backend.config(auth={
            "method": "token", "tokenFile": str(pathlib.Path(volume.directory) / "token")})}
        cluster.start_operator_thread()
        _payments(cluster)
        cluster.apply(example("billing-client", store="vault"))
        cluster.wait_ready("payments", "billing-client", timeout=60)
        workdir = tmp_path / "work"
        workdir.mkdir()
        run_runbook("operator-credentials.md", cluster, workdir,
                    Scenario(env=_vault_env(backend)))
        token = (pathlib.Path(volume.directory) / "token").read_text().strip()
    assert token != old
    assert vault.auth.token.lookup(token)["data"]["policies"] == ["apikey-operator", "default"]
    assert status_of(cluster, "payments", "billing-client")["currentKey"]["version"] == 2
    assert not list(workdir.glob("*token*")), "the runbook leaves no token files behind"
