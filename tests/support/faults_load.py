"""Load with faults: many ApiKeys on a fast policy while the API misbehaves, store servers
go away and the operator is SIGKILLed on a schedule; at the end every invariant must hold
for every key. `bench/load_with_faults.py` runs it at full size; a CI test runs it small.

Fault model (each fires on its own schedule while the load runs):
* the operator process is killed with SIGKILL every `kill_every` seconds and restarted;
* Kubernetes API faults aimed at random keys' Secrets: 409 on writes, 500s, 429 with
  Retry-After, slow responses; and every watch stream cut;
* store faults (when Vault/AWS stores are used): connections refused, or hung, for a few
  seconds at a time (through a TcpProxy in front of the server).

Checked: at every observed Secret write, the built-in store invariant (a Secret holds only
keys its store holds as valid: `SecretTimeline`); after the load, with the schedule
stretched so the keys settle, the full contract for every key (`contract_violations`).
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from apikey_operator.testing.harness import APIKEYS, POLICIES, LocalCluster
from apikey_operator.testing.kube_traffic import WRITE_VERBS
from apikey_operator.testing.kubeapi import KubeApi
from apikey_operator.testing.process import OperatorProcess
from apikey_operator.testing.servers import TcpProxy
from tests.support.faults_contract import (
    StoreProbe,
    contract_violations,
    converged,
    decoded_data,
)
from tests.support.faults_leakscan import LeakScan
from tests.support.invariants import SecretTimeline

NAMESPACES = ("load-a", "load-b", "load-c", "load-d")


@dataclass
class LoadConfig:
    keys: int = 500
    duration: float = 180.0
    kill_every: float = 30.0
    api_fault_every: float = 2.0
    store_fault_every: float = 15.0
    store_fault_length: float = 3.0
    rotate_every: str = "10s"
    grace: str = "4s"
    settle_timeout: float = 180.0
    seed: int = 7


@dataclass
class LoadReport:
    keys: int = 0
    stores: dict[str, int] = field(default_factory=dict)
    duration_seconds: float = 0.0
    rotations: int = 0
    operator_kills: int = 0
    api_faults_injected: int = 0
    api_requests_failed_by_faults: int = 0
    watch_streams_cut: int = 0
    store_outages: int = 0
    secret_writes_observed: int = 0
    timeline_violations: int = 0
    keys_not_converged: int = 0
    contract_violations: int = 0
    settle_seconds: float = 0.0
    api_requests: int = 0
    keys_projected: int = 0
    leaks: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (self.timeline_violations + self.keys_not_converged + self.contract_violations
                + self.leaks)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["violations"] = self.violations
        return out


class _Ticker(threading.Thread):
    """Calls `action` every `every` seconds until stopped; exceptions end nothing."""

    def __init__(self, every: float, action: Callable[[], None], name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.every = every
        self.action = action
        self.stopped = threading.Event()
        self.errors = 0

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                self.action()
            except Exception:  # a fault injector must never stop the run
                self.errors += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


def run_load(workdir: Path, stores: Mapping[str, Mapping[str, Any]],
             proxies: Mapping[str, TcpProxy], config: LoadConfig,
             log: Callable[[str], None] = print) -> LoadReport:
    """Run the load; `stores` maps store name -> config ("kubernetes" needs none) and
    `proxies` store name -> the TcpProxy its address goes through (for outages)."""
    rng = random.Random(config.seed)
    report = LoadReport(keys=config.keys)
    names = list(stores) or ["kubernetes"]
    assignments = [(NAMESPACES[i % len(NAMESPACES)], f"key-{i:04d}", names[i % len(names)])
                   for i in range(config.keys)]
    report.stores = dict(Counter(store for _, _, store in assignments))
    process_stores = {n: c for n, c in stores.items() if n != "kubernetes"}
    with contextlib.ExitStack() as cleanup, LocalCluster(
            start_operator=False, namespaces=NAMESPACES, workdir=workdir / "cluster") as cluster:
        api = cluster.api
        probes = {n: StoreProbe(api, n, stores.get(n)) for n in names}
        api.create_object({"apiVersion": "apikeys.dev/v1alpha1", "kind": "RotationPolicy",
                           "metadata": {"name": "load"},
                           "spec": {"rotateEvery": config.rotate_every,
                                    "gracePeriod": config.grace}})
        for ns, name, store in assignments:
            api.create_object({"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
                               "metadata": {"name": name, "namespace": ns},
                               "spec": {"store": store, "rotationPolicyRef": {"name": "load"}}})
        timeline = _KeyCollectingTimeline(api)
        timeline.start()
        operator = OperatorProcess(cluster.kubeconfig, workdir, stores=process_stores,
                                   name="load-operator", verbose=False)
        cleanup.callback(timeline.stop)
        cleanup.callback(operator.stop)
        operator.start()
        log(f"load: {config.keys} keys on {report.stores}; waiting for provisioning")
        _wait(lambda: all(converged(api, ns, n) for ns, n, _ in assignments), 300)
        mark = api.traffic.mark()
        started = time.monotonic()
        lock = threading.Lock()

        def kill() -> None:
            with lock:
                operator.kill()
                report.operator_kills += 1
                operator.start()

        def api_fault() -> None:
            ns, name, _ = rng.choice(assignments)
            kind = rng.choice(["409", "500", "429", "slow", "cut"])
            if kind == "cut":
                report.watch_streams_cut += api.cut_watches()
                return
            if kind == "409":
                api.traffic.inject(status=409, times=3, verbs=WRITE_VERBS, name=name,
                                   namespace=ns)
            elif kind == "500":
                api.traffic.inject(status=500, times=3, name=name, namespace=ns)
            elif kind == "429":
                api.traffic.inject(status=429, retry_after=1, times=3, name=name, namespace=ns)
            else:
                api.traffic.inject(delay=0.5, times=5, name=name, namespace=ns)
            report.api_faults_injected += 1

        def store_fault() -> None:
            if not proxies:
                return
            proxy = proxies[rng.choice(sorted(proxies))]
            with proxy.outage(rng.choice(["refuse", "hang"])):
                report.store_outages += 1
                time.sleep(config.store_fault_length)

        tickers = [_Ticker(config.kill_every, kill, "killer"),
                   _Ticker(config.api_fault_every, api_fault, "api-faults"),
                   _Ticker(config.store_fault_every, store_fault, "store-faults")]
        for ticker in tickers:
            ticker.start()
        try:
            while time.monotonic() - started < config.duration:
                time.sleep(5)
                log(f"load: {time.monotonic() - started:5.0f}s, kills {report.operator_kills},"
                    f" api faults {report.api_faults_injected}, outages {report.store_outages},"
                    f" secret writes {timeline.consumer_versions_seen}")
        finally:
            for ticker in tickers:
                ticker.stop()
            api.traffic.clear_faults()
            for proxy in proxies.values():
                proxy.set_mode("forward")
        report.duration_seconds = round(time.monotonic() - started, 1)
        report.api_requests = len(api.traffic.records(since=mark))
        report.api_requests_failed_by_faults = len(
            [r for r in api.traffic.records(since=mark) if r.injected])

        # Settle: stretch the schedule so no new rotation starts, let every key converge.
        with lock:
            if not operator.alive:
                operator.start()
        api.patch_object(POLICIES, None, "load", {"spec": {"rotateEvery": "3650d"}})
        settle_started = time.monotonic()
        problems: dict[tuple[str, str], list[str]] = {}

        def check_all() -> bool:
            problems.clear()
            for ns, name, store in assignments:
                if not converged(api, ns, name):
                    problems[(ns, name)] = ["not Ready"]
                    continue
                found = contract_violations(api, probes[store], ns, name)
                if found:
                    problems[(ns, name)] = found
            return not problems

        _wait(check_all, config.settle_timeout, poll=2.0)
        report.settle_seconds = round(time.monotonic() - settle_started, 1)
        for ns, name, _ in assignments:
            body = api.get_object(APIKEYS, ns, name) or {}
            version = ((body.get("status") or {}).get("currentKey") or {}).get("version") or 1
            report.rotations += int(version) - 1
        report.keys_not_converged = sum(1 for p in problems.values() if p == ["not Ready"])
        report.contract_violations = sum(len(p) for p in problems.values() if p != ["not Ready"])
        report.examples = [f"{k[0]}/{k[1]}: {p[0]}" for k, p in list(problems.items())[:5]]
        operator.stop()
        timeline.stop()
        report.secret_writes_observed = timeline.consumer_versions_seen
        report.keys_projected = len(timeline.keys_seen)
        builtin = {f"{ns}/{name}" for ns, name, store in assignments if store == "kubernetes"}
        own = [v for v in timeline.violations
               if v.split(" ")[1] in builtin]
        report.timeline_violations = len(own)
        report.examples += own[:5]
        scan = LeakScan()
        for key in timeline.keys_seen:
            scan.add_key(key)
        scan.add_text("cluster", cluster.visible_text())
        scan.add_text("operator log", operator.logs())
        leaks = scan.findings()
        report.leaks = len(leaks)
        report.examples += [f"leak {fp} in {source}" for source, fp in leaks[:5]]
    return report


class _KeyCollectingTimeline(SecretTimeline):
    """The invariant timeline, also remembering every key any consumer Secret ever held
    (the operator runs in another process, so this is how the leak scan learns them)."""

    def __init__(self, api: KubeApi) -> None:
        super().__init__(api)
        self.keys_seen: set[str] = set()

    def _on_event(self, event: Mapping[str, Any]) -> None:
        obj = event.get("object") or {}
        refs = (obj.get("metadata") or {}).get("ownerReferences") or []
        if any(r.get("kind") == "ApiKey" for r in refs):
            self.keys_seen.update(decoded_data(obj).values())
        super()._on_event(event)


def _wait(predicate: Callable[[], bool], timeout: float, poll: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return predicate()
