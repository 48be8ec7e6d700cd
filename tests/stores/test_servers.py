"""The test servers themselves: restarts, resets, TLS and the outage proxy."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from apikey_operator.stores.base import StoreError, StoreUnavailable
from apikey_operator.testing.servers import MotoServer, OpenBaoServer, TcpProxy
from tests.stores.conftest import GRACE_END, new_doc, new_ref
from tests.support.store_backends import VaultBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def tls_openbao() -> Iterator[OpenBaoServer]:
    with OpenBaoServer(tls=True) as server:
        yield server


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
async def test_vault_over_tls_needs_the_ca_unless_told_to_skip(
    tls_openbao: OpenBaoServer, tmp_path: Path
) -> None:
    assert tls_openbao.address.startswith("https://") and tls_openbao.ca_file
    token_file = tls_openbao.write_token_file(tmp_path / "token")
    backend = VaultBackend(tls_openbao, token_file, proxy=None)
    ref = new_ref()
    try:
        trusted = backend.make_store(tls={"caFile": tls_openbao.ca_file})
        written = await trusted.write_pending(ref, new_doc(1))
        await trusted.promote(ref, written.version, GRACE_END)

        untrusted = backend.make_store()
        with pytest.raises(StoreError, match="TLS verification") as caught:
            await untrusted.read(ref)
        assert not isinstance(caught.value, StoreUnavailable)

        skipping = backend.make_store(tls={"skipVerify": True})
        assert (await skipping.read(ref)).current == written
    finally:
        await backend.aclose()


def test_a_restarted_dev_server_is_empty_but_usable() -> None:
    with OpenBaoServer() as server:
        port, token = server.port, server.token
        assert server.api("POST", "secret/data/probe", {"data": {"a": "b"}})[0] == 200

        server.stop()
        assert not server.running
        server.start()

        assert (server.port, server.token) == (port, token)
        assert server.api("GET", "secret/data/probe")[0] == 404
        assert server.api("POST", "secret/data/probe", {"data": {"a": "b"}})[0] == 200


def test_moto_resets_and_restarts_on_the_same_port(moto_server: MotoServer) -> None:
    import boto3

    client = boto3.client("secretsmanager", endpoint_url=moto_server.endpoint_url,
                          region_name="us-east-1", aws_access_key_id="t",
                          aws_secret_access_key="t")
    client.create_secret(Name="launcher-probe", SecretString="x")
    moto_server.reset()
    assert client.list_secrets()["SecretList"] == []

    client.create_secret(Name="launcher-probe", SecretString="x")
    moto_server.stop()
    moto_server.start()
    assert client.list_secrets()["SecretList"] == []


def _http_status(port: int, timeout: float = 1.0) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET /moto-api/data.json HTTP/1.0\r\nHost: x\r\n\r\n")
            return sock.recv(64).decode(errors="replace").split(" ")[1]
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "timeout"


def test_the_proxy_forwards_refuses_and_hangs(moto_server: MotoServer) -> None:
    with TcpProxy(moto_server.port) as proxy:
        assert _http_status(proxy.port) == "200"
        with proxy.outage("refuse"):
            assert _http_status(proxy.port) == "refused"
        assert _http_status(proxy.port) == "200"
        with proxy.outage("hang"):
            assert _http_status(proxy.port, timeout=0.5) == "timeout"
        assert _http_status(proxy.port) == "200"


def test_the_key_vault_emulator_restarts_empty_on_the_same_ports_and_is_cleaned_up() -> None:
    from azure.core.exceptions import ResourceNotFoundError

    from apikey_operator.testing.servers import KeyVaultServer
    from tests.support.store_backends import azure_secret_client

    server = KeyVaultServer().start()
    workdir = server.workdir
    try:
        client = azure_secret_client(server)
        client.set_secret("launcher-probe", "x")
        assert client.get_secret("launcher-probe").value == "x"
        server.stop()
        assert not server.running
        server.start()
        with pytest.raises(ResourceNotFoundError):
            client.get_secret("launcher-probe")
    finally:
        server.close()
    assert not server.running and not workdir.exists()


def test_the_key_vault_emulator_answers_faults_then_recovers() -> None:
    from azure.core.exceptions import HttpResponseError

    from apikey_operator.testing.servers import KeyVaultServer
    from tests.support.store_backends import azure_secret_client

    with KeyVaultServer() as server:
        client = azure_secret_client(server)
        client.set_secret("fault-probe", "x")
        server.fail_next(429, count=1, retry_after=3)
        with pytest.raises(HttpResponseError) as throttled:
            client.get_secret("fault-probe", retry_total=0)
        assert throttled.value.status_code == 429
        assert throttled.value.response.headers["Retry-After"] == "3"
        server.deny(True)
        with pytest.raises(HttpResponseError) as denied:
            client.get_secret("fault-probe")
        assert denied.value.status_code == 403
        server.deny(False)
        assert client.get_secret("fault-probe").value == "x"
