"""The example service and client, for real: a rotation with zero failed requests.

The service runs as its own process on a free port with a KeyRing over one
folder; the client runs here with ApiKeyProvider over another folder (two pods,
two mounts of the same Secret). The test plays the kubelet for both folders and
updates them at different moments, in both orders, as two kubelets would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apikey_operator.keys import KeyFormat, fingerprint, generate
from apikey_operator.testing.kubelet import SecretVolume

from .helpers import example_service, load_example, status_with

pytestmark = pytest.mark.integration

FORMAT = KeyFormat(prefix="bill_")
SETTLE = 0.4  # seconds between the two kubelets' updates, and between steps


@pytest.fixture
def folders(tmp_path: Path) -> tuple[SecretVolume, SecretVolume]:
    return SecretVolume(tmp_path / "service-pod"), SecretVolume(tmp_path / "client-pod")


@pytest.fixture
def keys() -> list[str]:
    return [generate(FORMAT) for _ in range(3)]


@pytest.fixture
def service(
    folders: tuple[SecretVolume, SecretVolume], keys: list[str], tmp_path: Path
) -> Iterator[str]:
    for volume in folders:
        volume.write({"api-key": keys[0]})
    log = tmp_path / "service.log"
    with example_service(folders[0].directory, log) as base:
        yield base
    for key in keys:
        assert key not in log.read_text()


async def rotate(first: SecretVolume, second: SecretVolume, data: dict[str, str]) -> None:
    """One Secret change reaching two pods' volumes at different moments."""
    first.write(data)
    await asyncio.sleep(SETTLE)
    second.write(data)
    await asyncio.sleep(SETTLE)


async def test_a_rotation_through_its_grace_period_fails_no_request(
    service: str, folders: tuple[SecretVolume, SecretVolume], keys: list[str]
) -> None:
    client_module = load_example("client")
    service_pod, client_pod = folders
    k1, k2, k3 = keys
    stop = asyncio.Event()
    run = asyncio.create_task(
        client_module.run(
            f"{service}/invoices", client_pod.directory, ttl=0.2, interval=0.01, count=0, stop=stop
        )
    )
    await asyncio.sleep(SETTLE)
    # Rotation 1 reaches the client's pod first: it presents k2 before the service
    # knows it, and must fall back to k1 (still valid) instead of failing.
    await rotate(client_pod, service_pod, {"api-key": k2, "api-key-previous": k1})
    # Grace ends on the service first: the client's cached k1 is refused, it re-reads.
    await rotate(service_pod, client_pod, {"api-key": k2})
    # Rotation 2 in the other order, then its grace ends on the client first.
    await rotate(service_pod, client_pod, {"api-key": k3, "api-key-previous": k2})
    await rotate(client_pod, service_pod, {"api-key": k3})
    stop.set()
    stats = await asyncio.wait_for(run, timeout=30)

    assert stats.failed == 0
    assert stats.ok > 50
    assert set(stats.keys_used) == {fingerprint(k) for k in keys}
    # After the grace the old keys are refused; the current one works.
    url = f"{service}/invoices"
    assert status_with(url, k1) == 401
    assert status_with(url, k2) == 401
    assert status_with(url, k3) == 200
    assert status_with(url, None) == 401


def test_the_service_accepts_both_keys_during_the_grace_only(
    service: str, folders: tuple[SecretVolume, SecretVolume], keys: list[str]
) -> None:
    service_pod, _ = folders
    url = f"{service}/invoices"
    assert status_with(url, keys[0]) == 200
    assert status_with(url, keys[1]) == 401
    service_pod.write({"api-key": keys[1], "api-key-previous": keys[0]})
    assert status_with(url, keys[1]) == 200
    assert status_with(url, keys[0]) == 200
    service_pod.write({"api-key": keys[1]})
    # The ring checks the folder at most once a second; a removed previous key is
    # refused after that.
    deadline = time.monotonic() + 10
    while status_with(url, keys[0]) != 401:
        assert time.monotonic() < deadline, "the previous key is still accepted"
        time.sleep(0.1)
    assert status_with(url, keys[1]) == 200
    assert status_with(f"{service}/healthz", None) == 200
