"""The CI-sized run of bench/load_with_faults.py: 30 keys on a 10 s policy for 30 s, spread
over the three stores, the operator SIGKILLed every 10 s, API faults every 2 s, store
outages; afterwards every invariant holds for every key and no key leaked.
"""

from __future__ import annotations

import pathlib

import pytest

from apikey_operator.testing.servers import TcpProxy
from tests.reliability.conftest import StoreConfigFactory
from tests.support.faults_load import LoadConfig, run_load

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def test_a_small_load_with_faults_keeps_every_invariant(
    store_config: StoreConfigFactory, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    bao_port = request.getfixturevalue("bao").port
    moto_port = request.getfixturevalue("moto").port
    with TcpProxy(bao_port) as vault_proxy, TcpProxy(moto_port) as aws_proxy:
        stores = dict([store_config("kubernetes"),
                       store_config("vault", address=vault_proxy.address),
                       store_config("aws", address=aws_proxy.address)])
        report = run_load(tmp_path, stores, {"vault": vault_proxy, "aws": aws_proxy},
                          LoadConfig(keys=30, duration=30, kill_every=10,
                                     store_fault_every=10, settle_timeout=90),
                          log=lambda line: None)
    assert report.operator_kills >= 2
    assert report.api_faults_injected > 0 and report.store_outages > 0
    assert report.rotations >= report.keys, "the keys did not keep rotating under the faults"
    assert report.examples == []
    assert report.violations == 0, report.as_dict()
