"""A tenant's own Secrets, however many and large, cost the operator nothing (issue 18 item 2):
it watches only the Secrets it manages, selected by the API server."""

from __future__ import annotations

import base64
import pathlib
import secrets
import time
from collections.abc import Iterator

import pytest

from apikey_operator.testing.harness import SECRETS, LocalCluster
from apikey_operator.testing.process import OperatorProcess
from tests.integration.helpers import apikey

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

FOREIGN = 334
SIZE = 900_000  # bytes of data per Secret, under the API server's 1 MiB object limit
# 300 MB of tenant data, the issue's own figure. With every Secret watched the operator grew by
# about the data size (the issue saw 128 MB to 259 MB for 150 such Secrets); the issue allows
# 10 % of the operator's RSS without them (measured: 55.3 MiB without, 55.5 MiB with).
ALLOWED_SHARE = 0.10


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(start_operator=False) as local:
        yield local
        local.api.delete_collection(SECRETS, "payments")


def rss(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _started_rss(cluster: LocalCluster, name: str, key: str) -> tuple[OperatorProcess, int]:
    operator = OperatorProcess(cluster.kubeconfig, cluster.workdir, verbose=False, name=name)
    operator.start()
    cluster.apply(apikey(key))
    cluster.wait_ready("payments", key, timeout=60)
    time.sleep(3.0)
    assert operator.process is not None and operator.alive
    return operator, rss(operator.process.pid)


def test_three_hundred_megabytes_of_foreign_secrets_leave_the_operator_flat(
    cluster: LocalCluster
) -> None:
    operator, baseline = _started_rss(cluster, "clean", "before")
    operator.stop()
    for i in range(FOREIGN):
        value = base64.b64encode(secrets.token_bytes(SIZE * 3 // 4)).decode()
        cluster.api.create_object({"apiVersion": "v1", "kind": "Secret",
                                   "metadata": {"name": f"tenant-blob-{i}",
                                                "namespace": "payments"},
                                   "data": {"blob": value}})
    # A start lists what it watches: with every Secret watched that list alone held all of
    # the tenant's data at once (the issue: 398 MB at restart).
    operator, started = _started_rss(cluster, "with-foreign", "after")
    try:
        allowed = ALLOWED_SHARE * baseline
        grown = started - baseline
        assert grown < allowed, f"the operator started {grown / 2**20:.0f} MiB bigger"
        # And while running: more of them change, the operator stays flat.
        for i in range(FOREIGN // 2):
            cluster.api.patch_object(SECRETS, "payments", f"tenant-blob-{i}",
                                     {"metadata": {"labels": {"touched": "yes"}}})
        time.sleep(3.0)
        assert operator.process is not None
        grown = rss(operator.process.pid) - baseline
        assert grown < allowed, f"the operator grew by {grown / 2**20:.0f} MiB"
        assert operator.alive
    finally:
        operator.stop()
