"""The benchmark's server side: a real control plane and the counting proxy in a child process.

The process under test goes through the proxy (its kubeconfig) and is counted by User-Agent;
the driver goes to the kube-apiserver directly and is not counted; the control plane's
processes are gone once the child stopped.
"""

from __future__ import annotations

import json
import pathlib
import ssl
import urllib.request
from typing import Any

import pytest
import yaml
from bench.procs import Cluster

pytestmark = pytest.mark.integration


def _send(url: str, cluster: Cluster, method: str, path: str, agent: str,
          body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        url + path, method=method, data=json.dumps(body).encode() if body else None,
        headers={"Authorization": f"Bearer {cluster.token}", "User-Agent": agent,
                 "Content-Type": "application/json", "Accept": "application/json"})
    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    with urllib.request.urlopen(request, timeout=30, context=context) as response:
        return json.load(response)


def _count(cluster: Cluster, **match: str) -> int:
    return sum(row["count"] for row in cluster.counts()["counts"]
               if all(row[k] == v for k, v in match.items()))


@pytest.mark.timeout(180)
def test_the_proxy_counts_the_process_under_test_by_actor_and_not_the_driver(
        tmp_path: pathlib.Path) -> None:
    cluster = Cluster(tmp_path, ["bench"])
    try:
        cluster.wait_ready()
        assert cluster.versions["kube_apiserver"].startswith("v1.")
        assert cluster.versions["etcd"].startswith("v3.")
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == cluster.url
        assert cluster.url != cluster.apiserver_url

        # The driver, straight to the kube-apiserver: never counted.
        _send(cluster.apiserver_url, cluster, "GET", "/api/v1/namespaces/bench/secrets",
              "apikey-bench/1")
        # The process under test, through the proxy.
        _send(cluster.url, cluster, "GET", "/api/v1/namespaces/apikey-operator/secrets",
              "python-httpx/0.28")
        _send(cluster.url, cluster, "POST", "/api/v1/namespaces/bench/events", "kopf/1.45.2",
              {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "bench-"},
               "involvedObject": {"kind": "ConfigMap", "namespace": "bench", "name": "x"},
               "reason": "Logging", "message": "hello", "type": "Normal"})
        _send(cluster.url, cluster, "GET", "/api/v1/namespaces/bench/secrets", "apikey-bench/1")

        assert _count(cluster, actor="operator", verb="list", resource="secrets",
                      tag="store") == 1
        assert _count(cluster, actor="kopf", verb="create", resource="events",
                      tag="reason:Logging") == 1
        assert _count(cluster, actor="bench") == 1  # only the one sent through the proxy

        usage = cluster.component_usage()
        assert set(usage) == {"apiserver", "etcd", "controller_manager", "proxy"}
        assert usage["apiserver"].cpu_seconds > 0
        assert usage["etcd"].rss_mb > 0
    finally:
        cluster.stop()
    for name, pid in cluster.pids.items():
        assert not pathlib.Path(f"/proc/{pid}").exists() or _zombie(pid), name
    # The data and the keys are gone, the logs stay.
    plane_dir = tmp_path / "cluster" / "controlplane"
    assert not (plane_dir / "etcd").exists()
    assert not (plane_dir / "pki").exists()
    assert not (plane_dir / "kubeconfig").exists()
    assert not cluster.kubeconfig.exists()
    assert (plane_dir / "kube-apiserver.log").exists()


def _zombie(pid: int) -> bool:
    """An exited process its parent has not reaped yet (or one already gone)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
