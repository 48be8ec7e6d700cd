"""The benchmark scenarios, each against one control plane + one operator (or baseline) process.

Every scenario returns plain JSON. Request figures come from the counting proxy in front of
the kube-apiserver (before/after snapshots, see :mod:`bench.accounting`), store figures from
the operator's instrumented stores, CPU and memory from /proc (the operator's, and the
kube-apiserver's, etcd's and the proxy's), latencies from the driver's watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apikey_operator.stores.base import parse_time
from bench import accounting
from bench.client import POLICIES_URL, Api, Body, Observer, is_ready, key_version
from bench.procs import Baseline, Child, Cluster, OperatorUnderTest, Usage

NAMESPACE = "bench"
WARMUP_NAMESPACE = "bench-warmup"
OPERATOR_NAMESPACE = "apikey-operator"
POLICY = "bench-policy"
# The keys of the rotation storm reference a policy of their own: a storm of 1,000 keys can
# run with 5,000 present, and only those 1,000 become due.
STORM_POLICY = "bench-storm-policy"
CALM_POLICY = {"rotateEvery": "30d", "gracePeriod": "1h"}
REVOKE_ANNOTATION = "apikeys.dev/revoke"
STORE_STATE_ANNOTATION = "apikeys.dev/store-state"
CREATE_CONCURRENCY = 32
# The operator's default bound on concurrent store calls (Settings.max_concurrent_store_calls).
STORE_CONCURRENCY_LIMIT = 16


def apikey_body(name: str, namespace: str = NAMESPACE, store: str | None = None,
                policy: str = POLICY) -> Body:
    spec: dict[str, Any] = {"rotationPolicyRef": {"name": policy}}
    if store is not None:
        spec["store"] = store
    return {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def key_name(i: int, prefix: str = "key") -> str:
    return f"{prefix}-{i:05d}"


@dataclass
class Env:
    """One control plane, one operator-like process and the driver's client and watches."""

    workdir: pathlib.Path
    cluster: Cluster
    process: Child
    api: Api
    observer: Observer
    ours: bool
    # What the operator was started with, to start it again (the start-up scenario).
    stores: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    extra_env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def counts(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.cluster.counts()["counts"]
        return rows

    def store_stats(self, reset_peaks: bool = False) -> dict[str, Any]:
        if isinstance(self.process, OperatorUnderTest):
            return self.process.store_stats(reset_peaks)
        return {"calls": []}


@contextlib.asynccontextmanager
async def environment(workdir: pathlib.Path, *, baseline: bool,
                      stores: Mapping[str, Mapping[str, Any]] | None = None,
                      env: Mapping[str, str] | None = None) -> AsyncIterator[Env]:
    """Start the control plane, then the operator (or the baseline), warmed up on one key."""
    cluster = await asyncio.to_thread(_start_cluster, workdir)
    process: Child | None = None
    api: Api | None = None
    observer: Observer | None = None
    handle: Env | None = None
    try:
        # The driver goes to the kube-apiserver itself: only the process under test is counted.
        api = Api(cluster.apiserver_url, token=cluster.token, ca_file=cluster.ca_file,
                  concurrency=CREATE_CONCURRENCY + 4)
        observer = Observer(api, NAMESPACE)
        for policy in (POLICY, STORM_POLICY):
            await api.create(POLICIES_URL, {"apiVersion": "apikeys.dev/v1alpha1",
                                            "kind": "RotationPolicy",
                                            "metadata": {"name": policy},
                                            "spec": dict(CALM_POLICY)})
        if baseline:
            process = Baseline(workdir, cluster.kubeconfig)
        else:
            process = OperatorUnderTest(workdir, cluster.kubeconfig, stores or {}, env or {})
            await asyncio.to_thread(process.wait_stats)
        await _warm_up(api, process, next(iter(stores or {}), None))
        await observer.start()
        handle = Env(workdir, cluster, process, api, observer, ours=not baseline,
                     stores=dict(stores or {}), extra_env=dict(env or {}))
        yield handle
    finally:
        # The start-up scenario replaces the operator process: stop the one running now.
        if handle is not None and handle.process is not process:
            await asyncio.to_thread(handle.process.stop)
        if observer is not None:
            await observer.stop()
        if api is not None:
            await api.close()
        if process is not None:
            await asyncio.to_thread(process.stop)
        await asyncio.to_thread(cluster.stop)


def _start_cluster(workdir: pathlib.Path) -> Cluster:
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(workdir, [NAMESPACE, WARMUP_NAMESPACE])
    try:
        return cluster.wait_ready()
    except BaseException:
        cluster.stop()
        raise


async def _warm_up(api: Api, process: Child, store: str | None, within: float = 60.0) -> None:
    """One key made Ready proves the operator is up and its watches are open."""
    path = api.apikey_path(WARMUP_NAMESPACE, "warmup")
    await api.create(api.apikey_path(WARMUP_NAMESPACE),
                     apikey_body("warmup", WARMUP_NAMESPACE, store))
    deadline = time.monotonic() + within
    while not is_ready(await api.get(path)):
        process.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{process.name} did not make the warm-up key Ready")
        await asyncio.sleep(0.1)


def _busy(rows: list[dict[str, Any]]) -> int:
    return sum(int(r["count"]) for r in rows
               if r["actor"] != "bench" and r["verb"] not in ("watch", "discovery", "other"))


async def settle(env: Env, quiet: float = 1.0, within: float = 60.0) -> float:
    """Wait until the operator has sent no request for ``quiet`` seconds; returns the wait."""
    start = time.monotonic()
    last = _busy(await asyncio.to_thread(env.counts))
    last_change = time.monotonic()
    while time.monotonic() - last_change < quiet:
        if time.monotonic() - start > within:
            break
        await asyncio.sleep(0.25)
        now = _busy(await asyncio.to_thread(env.counts))
        if now != last:
            last, last_change = now, time.monotonic()
    return round(time.monotonic() - start, 2)


def _server_cpu(env: Env) -> dict[str, float]:
    usages: dict[str, Usage] = env.cluster.component_usage()
    return {name: u.cpu_seconds for name, u in usages.items()}


@dataclass
class Window:
    """Counters at the start of a measured window."""

    counts: list[dict[str, Any]]
    stores: dict[str, Any]
    cpu: float
    server_cpu: dict[str, float]
    started: float
    load: float

    @classmethod
    async def open(cls, env: Env, reset_peaks: bool = False) -> Window:
        counts = await asyncio.to_thread(env.counts)
        stores = await asyncio.to_thread(env.store_stats, reset_peaks)
        return cls(counts, stores, env.process.usage().cpu_seconds, _server_cpu(env),
                   time.monotonic(), os.getloadavg()[0])

    async def close(self, env: Env, keys: int) -> dict[str, Any]:
        """Request, store and CPU figures since :meth:`open`, per key where it says so."""
        counts = await asyncio.to_thread(env.counts)
        stores = await asyncio.to_thread(env.store_stats)
        usage = env.process.usage()
        result: dict[str, Any] = {
            "seconds": round(time.monotonic() - self.started, 3),
            "api": accounting.summarize(accounting.diff_counts(self.counts, counts), keys),
            "operator_cpu_seconds": round(usage.cpu_seconds - self.cpu, 3),
            # The server side: kube-apiserver, etcd, kube-controller-manager, counting proxy.
            **{f"{name}_cpu_seconds": round(cpu - self.server_cpu[name], 3)
               for name, cpu in _server_cpu(env).items()},
            # Other sessions share this machine: the 1-minute load average at both ends.
            "load_average": [round(self.load, 2), round(os.getloadavg()[0], 2)],
        }
        if env.ours:
            delta = accounting.store_delta(self.stores, stores)
            result["store"] = accounting.store_figures(delta, keys)
            result["store"]["peak_concurrent_calls"] = stores["peak_in_flight"]
            result["store"]["peak_calls_started_per_100ms"] = stores["peak_starts_per_100ms"]
        return result


async def _sample_rss(env: Env, names: list[str], into: list[list[float]],
                      every: float = 0.5) -> None:
    """(keys Ready so far, operator RSS MB) every ``every`` seconds: memory against key count."""
    ready_at = env.observer.ready_at
    while True:
        ready = sum(1 for name in names if name in ready_at)
        into.append([ready, round(env.process.usage().rss_mb, 1)])
        await asyncio.sleep(every)


async def provisioning(env: Env, n: int, store: str | None = None,
                       prefix: str = "key", storm_keys: int = 0) -> dict[str, Any]:
    """N ApiKeys created at once (32 requests in flight): time to all Ready, per-key costs.

    The first ``storm_keys`` reference the storm's policy (see :func:`rotation_storm`).
    """
    window = await Window.open(env, reset_peaks=True)
    rss_before = env.process.usage().rss_mb
    sent: dict[str, float] = {}
    slots = asyncio.Semaphore(CREATE_CONCURRENCY)
    path = env.api.apikey_path(NAMESPACE)

    async def create(index: int, name: str) -> None:
        async with slots:
            sent[name] = time.monotonic()
            await env.api.create(path, apikey_body(
                name, store=store, policy=STORM_POLICY if index < storm_keys else POLICY))

    start = time.monotonic()
    names = [key_name(i, prefix) for i in range(n)]
    rss_samples: list[list[float]] = []
    sampler = asyncio.create_task(_sample_rss(env, names, rss_samples))
    try:
        await asyncio.gather(*(create(i, name) for i, name in enumerate(names)))
        applied = time.monotonic() - start
        ready_at = env.observer.ready_at
        waiting = {name for name in names if name not in ready_at}

        def track(kind: str, key: tuple[str, str], _body: Body | None) -> None:
            if kind == "apikey" and key[1] in ready_at:
                waiting.discard(key[1])

        env.observer.listeners.append(track)
        try:
            await env.observer.until(lambda: not waiting, 120 + n * 0.5,
                                     f"{n} ApiKeys to be Ready")
        finally:
            env.observer.listeners.remove(track)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    total = max(ready_at[name] for name in names) - start
    latencies = [ready_at[name] - sent[name] for name in names]
    await settle(env)
    figures = await window.close(env, n)
    usage = env.process.usage()
    return {
        "keys": n,
        "all_ready_seconds": round(total, 3),
        "create_requests_seconds": round(applied, 3),
        "keys_per_second": round(n / total, 1) if total else 0.0,
        "apply_to_ready": accounting.latency_summary(latencies),
        # Every key's latency, for the distribution plots (report.plots).
        "apply_to_ready_samples_s": [round(v, 3) for v in latencies],
        **figures,
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after": round(usage.rss_mb, 1),
        "rss_by_ready_keys": [*rss_samples, [n, round(usage.rss_mb, 1)]],
    }


async def idle(env: Env, n: int, seconds: float) -> dict[str, Any]:
    """N Ready keys left alone: requests and store calls per key per minute, CPU seconds."""
    await settle(env)
    window = await Window.open(env)
    await asyncio.sleep(seconds / 2)
    # kopf may still be draining watch events of the previous scenario (no requests, some
    # CPU): the second half of the window shows the steady state.
    halfway = env.process.usage().cpu_seconds
    await asyncio.sleep(seconds / 2)
    figures = await window.close(env, n)
    second_half = env.process.usage().cpu_seconds - halfway
    minutes = figures["seconds"] / 60
    api = figures["api"]
    result = {
        "keys": n,
        "seconds": figures["seconds"],
        "requests_per_key_per_minute": round(api["requests"] / n / minutes, 4),
        "watch_requests": api["watch_requests"],
        "operator_cpu_seconds": figures["operator_cpu_seconds"],
        "operator_cpu_percent": round(100 * figures["operator_cpu_seconds"]
                                      / figures["seconds"], 2),
        "operator_cpu_seconds_second_half": round(second_half, 3),
        "load_average": figures["load_average"],
        "api": api,
    }
    if "store" in figures:
        calls = figures["store"]["calls_per_key"] * n
        result["store_calls_per_key_per_minute"] = round(calls / n / minutes, 4)
    return result


def memory(env: Env, n: int, rss_mb_without_keys: float | None = None) -> dict[str, Any]:
    """The process's RSS now; per key: all of it over N, and (given the RSS before the keys
    were applied) what the keys added over N (the target's "about 20 kB per key")."""
    usage = env.process.usage()
    server = env.cluster.component_usage()
    figures: dict[str, Any] = {
        "keys": n, "rss_mb": round(usage.rss_mb, 1), "peak_rss_mb": round(usage.peak_rss_mb, 1),
        "rss_kb_per_key": round(usage.rss_mb * 1024 / max(n, 1), 1),
        **{f"{name}_rss_mb": round(u.rss_mb, 1) for name, u in server.items()}}
    if rss_mb_without_keys is not None:
        figures["rss_mb_without_keys"] = round(rss_mb_without_keys, 1)
        figures["added_kb_per_key"] = round(
            (usage.rss_mb - rss_mb_without_keys) * 1024 / max(n, 1), 1)
    return figures


def _digest(value: object) -> str:
    return hashlib.sha256(str(value).encode()).hexdigest()


class RevokeTracker:
    """Per revoked key: done once the old key is neither in its Secret nor valid in the store."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.pending: dict[str, tuple[int, str, float]] = {}
        self.done: dict[str, float] = {}

    def begin(self, name: str) -> None:
        body = self.env.observer.apikey(name) or {}
        secret = self.env.observer.secret(NAMESPACE, name) or {}
        old_value = (secret.get("data") or {}).get("api-key")
        self.pending[name] = (key_version(body), _digest(old_value), time.monotonic())

    def __call__(self, kind: str, key: tuple[str, str], _body: Body | None) -> None:
        namespace, name = key
        if kind == "secret" and namespace == OPERATOR_NAMESPACE:
            prefix = f"ak.{NAMESPACE}."
            name = name[len(prefix):] if name.startswith(prefix) else ""
        if name in self.pending and self._gone(name):
            self.done[name] = time.monotonic() - self.pending.pop(name)[2]

    def _gone(self, name: str) -> bool:
        version, old_digest, _ = self.pending[name]
        secret = self.env.observer.secret(NAMESPACE, name) or {}
        if any(_digest(v) == old_digest for v in (secret.get("data") or {}).values()):
            return False
        store = self.env.observer.secret(OPERATOR_NAMESPACE, f"ak.{NAMESPACE}.{name}") or {}
        raw = ((store.get("metadata") or {}).get("annotations") or {}).get(
            STORE_STATE_ANNOTATION, "{}")
        book = json.loads(raw)
        return version not in {book.get(p) for p in ("current", "previous", "pending")}


async def revoke(env: Env, names: list[str], n: int, *, one_by_one: bool = False
                 ) -> dict[str, Any]:
    """The revoke annotation on ``names``: annotation -> old key gone from Secret and store.

    At once (a burst), or ``one_by_one``: each revoke waits for the previous one to
    finish, which samples the latency of a single revoke ``len(names)`` times.
    """
    await settle(env)
    tracker = RevokeTracker(env)
    env.observer.listeners.append(tracker)
    window = await Window.open(env, reset_peaks=True)
    token = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")

    async def annotate(name: str) -> None:
        tracker.begin(name)
        await env.api.patch(env.api.apikey_path(NAMESPACE, name),
                            {"metadata": {"annotations": {REVOKE_ANNOTATION: token}}})

    try:
        if one_by_one:
            for name in names:
                await annotate(name)
                await env.observer.until(lambda: not tracker.pending, 60, f"revoke of {name}")
        else:
            await asyncio.gather(*(annotate(name) for name in names))
            await env.observer.until(lambda: not tracker.pending, 60 + len(names),
                                     f"{len(names)} revokes")
    finally:
        env.observer.listeners.remove(tracker)
    # Status patches and Events may trail the revoke itself; count them too.
    await settle(env)
    figures = await window.close(env, len(names))
    return {"keys_present": n, "revoked": len(names),
            "mode": "one by one" if one_by_one else "at once",
            "annotation_to_gone": accounting.latency_summary(tracker.done.values()),
            "annotation_to_gone_samples_s": [round(v, 4) for v in tracker.done.values()],
            "operator_cpu_seconds": figures["operator_cpu_seconds"],
            "apiserver_cpu_seconds": figures["apiserver_cpu_seconds"],
            "etcd_cpu_seconds": figures["etcd_cpu_seconds"],
            "proxy_cpu_seconds": figures["proxy_cpu_seconds"],
            "load_average": figures["load_average"],
            "api": figures["api"], "store": figures.get("store", {})}


def _created_at(body: Body) -> datetime:
    created = ((body.get("status") or {}).get("currentKey") or {}).get("createdAt")
    return parse_time(str(created))


async def _set_policy(env: Env, spec: Mapping[str, str], policy: str = STORM_POLICY) -> None:
    await env.api.patch(f"{POLICIES_URL}/{policy}", {"spec": dict(spec)})


async def _rotated_events(env: Env) -> dict[str, int]:
    """Rotated Events per ApiKey name in the bench namespace (an Event's count included)."""
    body = await env.api.get(f"/api/v1/namespaces/{NAMESPACE}/events"
                             "?fieldSelector=reason%3DRotated")
    per_key: dict[str, int] = {}
    for event in body.get("items") or []:
        name = (event.get("involvedObject") or {}).get("name", "")
        per_key[name] = per_key.get(name, 0) + int(event.get("count") or 1)
    return per_key


async def rotation_storm(env: Env, n: int, grace_seconds: int = 5,
                         min_age: float = 10.0, present: int | None = None) -> dict[str, Any]:
    """``n`` keys due at one instant (the first ``n``, which reference the storm's policy;
    ``present`` keys exist in all): that policy's rotateEvery drops below every key's age.

    rotateEvery is the age of the youngest key (at least 10 s and ``min_age``), so that all
    keys are due now and none is due again before the storm is over. Once all have rotated
    the policy is set back; the measured window runs until every old key's grace ended.
    Rotations per key are counted twice over: from the key versions the driver's watch saw
    (the version's rise over the window) and from the Rotated Events (at most once each).
    """
    await settle(env)
    events_before = await _rotated_events(env)
    names = [key_name(i) for i in range(n)]
    bodies = {name: env.observer.apikey(name) or {} for name in names}
    youngest = max(_created_at(b) for b in bodies.values())
    age = (datetime.now(UTC) - youngest).total_seconds()
    # A storm that lasts longer than rotateEvery would rotate its first keys again (and
    # again: a runaway that measures nothing useful), so the keys must be older than the
    # storm is long; the caller's estimate is ``min_age`` (twice the provisioning time).
    wanted = max(10.0, min_age)
    if age < wanted:
        await asyncio.sleep(wanted - age)
        age = wanted
    every = max(10, math.floor(age))
    before = {name: key_version(b) for name, b in bodies.items()}
    rotated: dict[str, float] = {}

    def track(kind: str, key: tuple[str, str], body: Body | None) -> None:
        name = key[1]
        if kind == "apikey" and body is not None and name in before and name not in rotated \
                and key_version(body) > before[name]:
            rotated[name] = time.monotonic()

    env.observer.listeners.append(track)
    window = await Window.open(env, reset_peaks=True)
    start = time.monotonic()
    try:
        await _set_policy(env, {"rotateEvery": f"{every}s", "gracePeriod": f"{grace_seconds}s"})
        await env.observer.until(lambda: len(rotated) >= n, 120 + n * 0.5,
                                 f"{n} keys to rotate")
    finally:
        env.observer.listeners.remove(track)
    all_rotated = max(rotated.values()) - start
    # Calm the policy at once: a storm that outlasts rotateEvery (a loaded machine) would
    # rotate its first keys again. This wakes every key once more (one store read each),
    # which the window counts, as it counts one whole cycle per key: rotate, then expire
    # the old key after its grace.
    await _set_policy(env, CALM_POLICY)
    await _wait_graces_ended(env, names, 120 + n * 0.2)
    await settle(env)
    figures = await window.close(env, n)
    # Keys rotated early are due again after rotateEvery: a storm longer than that shows up
    # here, and its second rotations are inside the window's figures.
    rotations = {name: key_version(env.observer.apikey(name) or {}) - before[name]
                 for name in names}
    events_after = await _rotated_events(env)
    event_rotations = {name: events_after.get(name, 0) - events_before.get(name, 0)
                       for name in names}
    twice = sum(1 for name in names if max(rotations[name], event_rotations[name]) >= 2)
    return {
        "keys": n,
        "keys_present": present if present is not None else n,
        "all_rotated": all(r >= 1 for r in rotations.values()),
        "max_rotations_per_key": max(rotations.values(), default=0),
        "max_rotated_events_per_key": max(event_rotations.values(), default=0),
        "keys_with_rotated_event": sum(1 for r in event_rotations.values() if r >= 1),
        "store_concurrency_limit": STORE_CONCURRENCY_LIMIT,
        "rotate_every_seconds": every,
        "grace_seconds": grace_seconds,
        "all_rotated_seconds": round(all_rotated, 3),
        "due_to_rotated": accounting.latency_summary(t - start for t in rotated.values()),
        "keys_rotated_twice_in_window": twice,
        **figures,
    }


async def _wait_graces_ended(env: Env, names: list[str], within: float) -> None:
    """Wait until no key has a previous key left (the storm's grace periods ended)."""
    holding = {name for name in names
               if ((env.observer.apikey(name) or {}).get("status") or {}).get("previousKey")}

    def track(kind: str, key: tuple[str, str], body: Body | None) -> None:
        if kind == "apikey" and body is not None and key[1] in holding \
                and not (body.get("status") or {}).get("previousKey"):
            holding.discard(key[1])

    env.observer.listeners.append(track)
    try:
        await env.observer.until(lambda: not holding, within, "the grace periods to end")
    finally:
        env.observer.listeners.remove(track)


def _watching(rows: list[dict[str, Any]]) -> int:
    """Watch requests the process under test has opened (kopf's and the operator's)."""
    return sum(int(r["count"]) for r in rows if r["actor"] != "bench" and r["verb"] == "watch")


async def _restart(env: Env) -> float:
    """Stop the operator (SIGTERM, as a rollout does) and start a new one; returns the
    monotonic time the new process was spawned."""
    await asyncio.to_thread(env.process.stop)
    spawned = time.monotonic()
    env.process = OperatorUnderTest(env.workdir, env.cluster.kubeconfig, env.stores,
                                    env.extra_env)
    return spawned


async def _resumed(env: Env, before: list[dict[str, Any]], n: int) -> float:
    """Wait until the new operator is up, has opened its watches again and then sent no
    request for 3 s (it has looked at every existing key); returns the wait's end."""
    process = env.process
    assert isinstance(process, OperatorUnderTest), "only the operator is restarted"
    await asyncio.to_thread(process.wait_stats)
    deadline = time.monotonic() + 120 + n * 0.05
    while _watching(await asyncio.to_thread(env.counts)) <= _watching(before):
        env.process.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError("the restarted operator opened no watch")
        await asyncio.sleep(0.2)
    await settle(env, quiet=3.0, within=120 + n * 0.05)
    return time.monotonic()


async def startup(env: Env, n: int) -> dict[str, Any]:
    """An operator restart with N existing, Ready keys, twice.

    First alone: every write the new process (and kopf for it) sends until it falls quiet is
    a rewrite of an existing key, the target being none. Then with a new ApiKey applied the
    moment the new process is spawned: the time until it is Ready is the time until the
    restarted operator serves new keys. Two restarts, so that the new key's own writes never
    mix with the rewrite count.
    """
    if not env.ours:
        raise ValueError("the start-up scenario restarts the operator, not the floor")
    await settle(env)
    before = await asyncio.to_thread(env.counts)
    spawned = await _restart(env)
    quiet_at = await _resumed(env, before, n)
    after = await asyncio.to_thread(env.counts)
    api = accounting.summarize(accounting.diff_counts(before, after), n)
    stores = accounting.store_delta({"calls": []}, await asyncio.to_thread(env.store_stats))
    usage = env.process.usage()
    writes = sum(row["count"] for row in api["rows"]
                 if row["verb"] in accounting.WRITE_VERBS)
    resume = {"resume_seconds": round(quiet_at - spawned - 3.0, 2),
              "writes": writes, "requests": api["requests"],
              "write_rows": [row for row in api["rows"]
                             if row["verb"] in accounting.WRITE_VERBS],
              "by_verb": {v: round(c * n) for v, c in api["by_verb_per_key"].items()},
              "store_calls": stores["total"], "store_calls_by_method": stores["calls"],
              "operator_cpu_seconds": round(usage.cpu_seconds, 2),
              "rss_mb": round(usage.rss_mb, 1)}

    # The second restart: a new key applied at once; Ready = serving.
    before = await asyncio.to_thread(env.counts)
    probe = f"startup-{datetime.now(UTC).strftime('%H%M%S')}"
    spawned = await _restart(env)
    await env.api.create(env.api.apikey_path(NAMESPACE), apikey_body(probe))
    await env.observer.until(lambda: probe in env.observer.ready_at, 120 + n * 0.05,
                             "the new key to be Ready after the restart")
    ready = env.observer.ready_at[probe] - spawned
    await _resumed(env, before, n)
    return {"keys_present": n, "first_restart": resume,
            "rewrites": writes,
            "new_key_ready_seconds": round(ready, 3),
            "second_restart_operator_cpu_seconds": round(env.process.usage().cpu_seconds, 2)}
