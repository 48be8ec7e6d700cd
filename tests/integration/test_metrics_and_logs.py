"""/metrics and JSON logs of a real `apikey-operator run` process."""

from __future__ import annotations

import json
import pathlib
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.process import OperatorProcess
from tests.integration.helpers import apikey

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def operator_process(tmp_path: pathlib.Path) -> Iterator[tuple[LocalCluster, OperatorProcess,
                                                               int]]:
    dead_port = free_port()
    token = tmp_path / "token"
    token.write_text("root")
    with LocalCluster(start_operator=False) as cluster:
        port = free_port()
        process = OperatorProcess(
            cluster.kubeconfig, cluster.workdir,
            stores={"vault": {"type": "vault", "address": f"http://127.0.0.1:{dead_port}",
                              "auth": {"method": "token", "tokenFile": str(token)},
                              "timeoutSeconds": 1}},
            extra_args=["--metrics-port", str(port)])
        process.start()
        try:
            yield cluster, process, port
        finally:
            process.stop()


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], metric: str,
          **labels: str) -> float:
    return sum(v for lab, v in samples.get(metric, []) if all(lab.get(k) == x
                                                               for k, x in labels.items()))


def remember_keys(cluster: LocalCluster) -> None:
    """The operator runs in another process: learn its keys from the Secrets it wrote."""
    for data_key, key in cluster.secret_data("payments", "billing").items():
        assert data_key in ("api-key", "api-key-previous")
        cluster.recorder(key)


def test_metrics_after_provisioning_rotation_store_error_and_revoke(
    operator_process: tuple[LocalCluster, OperatorProcess, int]
) -> None:
    cluster, process, port = operator_process
    cluster.apply(apikey("billing"))
    cluster.wait_ready("payments", "billing", timeout=40)
    samples = cluster.wait_for(lambda: (s := scrape(port)) and
                               value(s, "apikey_rotations_total", name="billing",
                                     trigger="initial", result="success") == 1 and
                               value(s, "apikey_reconcile_duration_seconds_count") >= 1 and s,
                               what="the provisioning metrics")
    assert value(samples, "apikey_key_age_seconds", namespace="payments", name="billing") >= 0
    remember_keys(cluster)

    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "m1"})
    cluster.wait_for(lambda: value(scrape(port), "apikey_rotations_total", name="billing",
                                   trigger="rotate", result="success") == 1,
                     what="the rotation metric")
    remember_keys(cluster)

    cluster.annotate("payments", "billing", {"apikeys.dev/revoke": "m2"})
    # Both old versions (the previous one still in its grace, and the current one) are
    # revoked by the emergency, and each is counted as such.
    cluster.wait_for(lambda: value(scrape(port), "apikey_revocations_total", name="billing",
                                   kind="emergency") == 2, what="the revocation metric")
    remember_keys(cluster)
    assert len(cluster.recorder.keys) == 3

    cluster.apply(apikey("unreachable", store="vault"))
    cluster.wait_reason("payments", "unreachable", "StoreUnavailable", timeout=40)
    cluster.wait_for(lambda: value(scrape(port), "apikey_store_errors_total",
                                   store="vault", operation="read") >= 1,
                     what="the store error metric")

    # Structured logs: one JSON object per line, with the object's namespace and name.
    lines = [line for line in process.logs().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert all(isinstance(r, dict) and "message" in r and "level" in r for r in records)
    about_billing = [r for r in records if r.get("name") == "billing"]
    assert about_billing and all(r.get("namespace") == "payments" for r in about_billing)
    assert not cluster.leaks(), "no key in logs, events or status"
    assert not cluster.recorder.leaks_in(process.logs())


def test_a_deleted_apikey_leaves_no_series_behind(
    operator_process: tuple[LocalCluster, OperatorProcess, int]
) -> None:
    """Per-key series are removed with their key, so churn cannot grow /metrics forever."""
    cluster, _process, port = operator_process
    cluster.apply(apikey("churned"))
    cluster.apply(apikey("kept"))
    cluster.wait_ready("payments", "churned", timeout=40)
    cluster.wait_ready("payments", "kept", timeout=40)
    cluster.annotate("payments", "churned", {"apikeys.dev/revoke": "before-delete"})
    cluster.wait_for(lambda: value(scrape(port), "apikey_revocations_total", name="churned",
                                   kind="emergency") == 1, what="the revocation metric")
    for key in cluster.secret_data("payments", "churned").values():
        cluster.recorder(key)
    for key in cluster.secret_data("payments", "kept").values():
        cluster.recorder(key)
    cluster.api.delete_object("apikeys.dev/v1alpha1/apikeys", "payments", "churned")
    cluster.wait_for(lambda: cluster.apikey("payments", "churned") is None, what="deletion")

    def churned_series(samples: dict[str, list[tuple[dict[str, str], float]]]) -> list[str]:
        return [name for name, rows in samples.items()
                for labels, _ in rows if labels.get("name") == "churned"]

    cluster.wait_for(lambda: churned_series(scrape(port)) == [], what="the series to go")
    samples = scrape(port)
    assert value(samples, "apikey_rotations_total", name="kept", trigger="initial",
                 result="success") == 1
    assert value(samples, "apikey_key_age_seconds", name="kept") >= 0
