"""Real OpenBao and moto servers for the consumer library tests, seeded with the
layout the operator's stores write (see apikey_operator.client.sources)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apikey_operator.testing.servers import MotoServer, OpenBaoServer, TcpProxy


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBaoServer]:
    with OpenBaoServer() as server:
        yield server


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture
def openbao_proxy(openbao: OpenBaoServer) -> Iterator[TcpProxy]:
    """A path to OpenBao that tests can cut (the server keeps its data)."""
    with TcpProxy(openbao.port) as proxy:
        yield proxy


@pytest.fixture
def moto_proxy(moto: MotoServer) -> Iterator[TcpProxy]:
    with TcpProxy(moto.port) as proxy:
        yield proxy
