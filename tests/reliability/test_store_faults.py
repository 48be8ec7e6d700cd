"""Store faults: refused connections, timeouts, 5xx, throttling, a sealed OpenBao, a failing
built-in store, on every store (Azure's 5xx and throttling come from a Key Vault emulator
of their own, since no proxy can forge an answer inside TLS). Every fault gets a store of
its own (its own proxy chain), so all of them run in one shared window and each is still
reported on its own.

During the window each faulty key is asked to rotate. The operator must report
`StoreUnavailable` on Ready (and a Warning Event), leave the consumer Secret
exactly as it was, back off (attempts are counted: no hot loop), keep serving a
key whose store is healthy, and once the fault ends carry out the rotation that
was asked for, once, with every invariant of the contract holding.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from apikey_operator import metrics
from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.servers import KeyVaultServer, MotoServer, OpenBaoServer, TcpProxy
from tests.integration.helpers import apikey
from tests.reliability.conftest import azure_store_config, store_config_for
from tests.support.faults_contract import (
    Expectation,
    StoreProbe,
    contract_violations,
    converged,
    decoded_data,
)
from tests.support.faults_http import (
    AWS_500,
    AWS_THROTTLE,
    VAULT_429,
    VAULT_500,
    FaultHttpProxy,
    HttpFault,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WINDOW = 8.0  # seconds every fault lasts
# At most this many failed store attempts per key in the window: the worker backs off
# 1, 2, 4, 8 s (jittered down to half), so a well-behaved operator makes about 5.
MAX_ATTEMPTS = 8
HTTP_FAULTS: dict[str, HttpFault] = {"vault-500": VAULT_500, "vault-429": VAULT_429,
                                     "aws-500": AWS_500, "aws-throttle": AWS_THROTTLE}
MODES = ("vault-refuse", "vault-hang", "vault-500", "vault-429", "vault-sealed",
         "aws-refuse", "aws-hang", "aws-500", "aws-throttle",
         "azure-refuse", "azure-hang", "azure-500", "azure-throttle",
         "kubernetes-500", "kubernetes-429")


@dataclass
class FaultCase:
    mode: str
    store: str
    name: str
    secret_before: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)
    warning_event: bool = False
    secret_unchanged: bool = False
    attempts: int = -1
    problems: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.mode.split("-", 1)[0]


@dataclass
class OutageRun:
    cases: dict[str, FaultCase]
    bystander_ready: bool


def _store_errors(store: str) -> float:
    total = 0.0
    for family in metrics.REGISTRY.collect():
        if family.name == "apikey_store_errors":
            total += sum(s.value for s in family.samples
                         if s.name.endswith("_total") and s.labels.get("store") == store)
    return total


@pytest.fixture(scope="module")
def outage(request: pytest.FixtureRequest) -> Iterator[OutageRun]:
    bao: OpenBaoServer = request.getfixturevalue("bao")
    moto: MotoServer = request.getfixturevalue("moto")
    with contextlib.ExitStack() as stack:
        stores: dict[str, dict[str, Any]] = {}
        tcp: dict[str, TcpProxy] = {}
        http: dict[str, FaultHttpProxy] = {}
        cases: dict[str, FaultCase] = {}
        # One emulator per answering fault: its fault switch is server-wide.
        answering: dict[str, KeyVaultServer] = {}
        for mode in MODES:
            kind = mode.split("-", 1)[0]
            if kind == "kubernetes":
                cases[mode] = FaultCase(mode, "kubernetes", f"k-{mode}")
                continue
            if kind == "azure":
                keyvault: KeyVaultServer = request.getfixturevalue("keyvault")
                if mode in ("azure-500", "azure-throttle"):
                    keyvault = answering[mode] = stack.enter_context(KeyVaultServer())
                tcp[mode] = stack.enter_context(TcpProxy(keyvault.port))
                stores[mode] = azure_store_config(keyvault, f"f{len(stores)}",
                                                  tcp[mode].address)
                cases[mode] = FaultCase(mode, mode, f"k-{mode}")
                continue
            port = bao.port if kind == "vault" else moto.port
            http[mode] = stack.enter_context(FaultHttpProxy(port))
            tcp[mode] = stack.enter_context(TcpProxy(http[mode].port))
            _, config = store_config_for(request, kind, address=tcp[mode].address)
            stores[mode] = config
            cases[mode] = FaultCase(mode, mode, f"k-{mode}")
        cluster = stack.enter_context(LocalCluster(stores=stores))
        probes = {mode: StoreProbe(cluster.api, case.store, stores.get(mode))
                  for mode, case in cases.items()}
        for case in cases.values():
            cluster.apply(apikey(case.name, store=case.store))
        for case in cases.values():
            cluster.wait_ready("payments", case.name, timeout=30)
            case.secret_before = cluster.secret("payments", case.name) or {}

        # --- all faults on ---
        sealed = False
        injected = []
        for mode, case in cases.items():
            if mode.endswith("-refuse"):
                tcp[mode].set_mode("refuse")
            elif mode.endswith("-hang"):
                tcp[mode].set_mode("hang")
            elif mode in HTTP_FAULTS:
                http[mode].fault = HTTP_FAULTS[mode]
            elif mode in answering:
                status, retry = (500, 0) if mode.endswith("500") else (429, 2)
                answering[mode].fail_next(status, count=1_000_000, retry_after=retry)
            elif mode == "vault-sealed":
                bao.seal()
                sealed = True
            else:
                status, retry = (500, None) if mode.endswith("500") else (429, 2)
                injected.append(cluster.api.traffic.inject(
                    status=status, retry_after=retry, times=None, resource="secrets",
                    namespace="apikey-operator", name=f"ak.payments.{case.name}"))
        started = time.monotonic()
        errors_before = {m: _store_errors(c.store) for m, c in cases.items()}
        mark = cluster.api.traffic.mark()
        try:
            for case in cases.values():
                cluster.annotate("payments", case.name, {"apikeys.dev/rotate": "outage"})
            deadline = started + WINDOW
            pending = set(cases)
            while pending and time.monotonic() < deadline + 10:
                for mode in list(pending):
                    cond = cluster.condition("payments", cases[mode].name)
                    if cond.get("reason") == "StoreUnavailable":
                        cases[mode].reported = cond
                        pending.discard(mode)
                time.sleep(0.1)
            cluster.apply(apikey("bystander"))
            bystander_ready = bool(cluster.wait_ready("payments", "bystander", timeout=15))
            time.sleep(max(0.0, deadline - time.monotonic()))
            for mode, case in cases.items():
                after = cluster.secret("payments", case.name) or {}
                case.secret_unchanged = (
                    after.get("data") == case.secret_before.get("data")
                    and after["metadata"]["resourceVersion"]
                    == case.secret_before["metadata"]["resourceVersion"])
                case.warning_event = any(
                    e.get("reason") == "StoreUnavailable" and e.get("type") == "Warning"
                    for e in cluster.events("payments", case.name))
                if case.kind == "kubernetes":
                    case.attempts = len([r for r in cluster.api.traffic.records(
                        since=mark, name=f"ak.payments.{case.name}") if r.injected])
                else:
                    case.attempts = int(_store_errors(case.store) - errors_before[mode])
        finally:
            # --- all faults off ---
            for proxy in tcp.values():
                proxy.set_mode("forward")
            for proxy in http.values():
                proxy.fault = None
            for server in answering.values():
                server.fail_next(500, count=0)
            for fault in injected:
                cluster.api.traffic.remove(fault)
            if sealed:
                bao.unseal()
        first_keys = {m: decoded_data(c.secret_before)["api-key"] for m, c in cases.items()}

        def recovered(mode: str) -> bool:
            return converged(cluster.api, "payments", cases[mode].name, version=2)

        _wait(lambda: all(recovered(m) for m in cases), 60)
        for mode, case in cases.items():
            expected = Expectation(version=2, kept_previous=first_keys[mode],
                                   handled_rotate="outage")
            _wait(lambda c=case, e=expected, p=probes[mode]: not contract_violations(
                cluster.api, p, "payments", c.name, e), 10)
            case.problems = contract_violations(cluster.api, probes[mode], "payments",
                                                case.name, expected)
        cluster.stop_operator_thread()
        leaks = cluster.leaks()
        assert not leaks, f"keys leaked into logs, events, status or metadata: {leaks}"
        yield OutageRun(cases, bystander_ready)


def _wait(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.1)


@pytest.mark.parametrize("mode", MODES)
def test_a_store_fault_is_reported_backed_off_and_recovered_from(
    outage: OutageRun, mode: str
) -> None:
    case = outage.cases[mode]
    assert case.reported.get("status") == "False", f"no StoreUnavailable reported: {case}"
    assert case.reported.get("reason") == "StoreUnavailable"
    assert case.warning_event, "no StoreUnavailable Warning Event"
    assert case.secret_unchanged, "the consumer Secret changed while the store was down"
    assert 1 <= case.attempts <= MAX_ATTEMPTS, f"{case.attempts} attempts in {WINDOW}s"
    assert case.problems == []


def test_a_key_on_a_healthy_store_is_served_during_the_outages(outage: OutageRun) -> None:
    assert outage.bystander_ready
