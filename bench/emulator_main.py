"""The emulated API server in a process of its own, with request counts by client.

Run as ``python -m bench.emulator_main --namespace NS ...``: it prints ``READY <url>`` on
stdout once it serves and runs until SIGTERM. Besides the Kubernetes API it answers
``GET /_bench/counts`` with every request counted so far (and ``GET /_bench/timeline?since=T``
with each request's arrival time, for latency analysis), keyed by who sent it (the
benchmark driver, kopf's own client, or the operator's API client, told apart by their
User-Agent), verb, resource, subresource and a tag: ``store`` for Secrets in the operator's
namespace (the built-in store) and ``reason:<R>`` for Events, so that Events posted through
kopf on the operator's behalf can be told from kopf's own log Events.

A process of its own keeps the emulator's CPU off the operator's interpreter (and its GIL),
so the operator's CPU seconds and the wall times are not inflated by the server.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import contextvars
import json
import signal
import sys
import time
from typing import Any

import aiohttp.web
import attrs

from apikey_operator.testing.emulator import ApiServerEmulator, serve
from apikey_operator.testing.harness import OPERATOR_NAMESPACE, default_crd_dir
from apikey_operator.testing.kube_traffic import RequestRecord, Traffic

COUNTS_PATH = "/_bench/counts"
TIMELINE_PATH = "/_bench/timeline"
TIMELINE_LENGTH = 200_000
BENCH_AGENT = "apikey-bench"

_actor: contextvars.ContextVar[str] = contextvars.ContextVar("actor", default="operator")
_event_reason: contextvars.ContextVar[str] = contextvars.ContextVar("event_reason", default="")


def actor_of(user_agent: str) -> str:
    """``bench`` (the driver), ``kopf`` (kopf's aiohttp client) or ``operator`` (lightkube)."""
    if user_agent.startswith(BENCH_AGENT):
        return "bench"
    if user_agent.startswith("kopf/"):
        return "kopf"
    return "operator"


class CountingTraffic(Traffic):
    """The emulator's request log, plus unbounded counts by (actor, verb, resource, ...)."""

    def __init__(self, operator_namespace: str) -> None:
        super().__init__(max_records=1000)
        self.operator_namespace = operator_namespace
        self.by_actor: collections.Counter[tuple[str, str, str, str, str]] = (
            collections.Counter())
        # Every request's record (its status is filled in once answered) and its actor.
        self.timeline: collections.deque[tuple[RequestRecord, str]] = (
            collections.deque(maxlen=TIMELINE_LENGTH))

    def record(self, method: str, path: str, verb: str, *, group: str | None = None,
               version: str | None = None, resource: str | None = None,
               subresource: str | None = None, namespace: str | None = None,
               name: str | None = None) -> RequestRecord:
        tag = ""
        if resource == "secrets" and namespace == self.operator_namespace:
            tag = "store"
        elif resource == "events" and verb == "create":
            tag = f"reason:{_event_reason.get()}"
        actor = _actor.get()
        rec = super().record(method, path, verb, group=group, version=version,
                             resource=resource, subresource=subresource,
                             namespace=namespace, name=name)
        with self._lock:
            self.by_actor[(actor, verb, resource or "", subresource or "", tag)] += 1
            self.timeline.append((rec, actor))
        return rec

    def timeline_since(self, since: float) -> list[list[Any]]:
        """Requests that arrived after monotonic time ``since``, for latency analysis: [time,
        actor, verb, resource, subresource, namespace, name, HTTP status]."""
        with self._lock:
            entries = [entry for entry in self.timeline if entry[0].at > since]
        return [[r.at, actor, r.verb, r.resource or "", r.subresource or "", r.namespace or "",
                 r.name or "", r.status] for r, actor in entries]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self.by_actor.items())
        return [{"actor": a, "verb": v, "resource": r, "subresource": s, "tag": t, "count": n}
                for (a, v, r, s, t), n in items]


@attrs.define(kw_only=True)
class BenchEmulator(ApiServerEmulator):
    """The project's emulator with the counts endpoint and per-client accounting."""

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        traffic = self.traffic
        assert isinstance(traffic, CountingTraffic)
        if raw.path == COUNTS_PATH:
            return aiohttp.web.json_response({"counts": traffic.snapshot(),
                                              "watches": self.watch_count(),
                                              "now": time.monotonic()})
        if raw.path == TIMELINE_PATH:
            since = float(raw.query.get("since", "0"))
            return aiohttp.web.json_response({"requests": traffic.timeline_since(since)})
        _actor.set(actor_of(raw.headers.get("User-Agent", "")))
        if raw.method == "POST" and raw.path.endswith("/events"):
            # aiohttp caches the body, so the emulator reads the same bytes again.
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                body = json.loads(await raw.read())
                _event_reason.set(str(body.get("reason", "")) if isinstance(body, dict) else "")
        return await super().__call__(raw)


async def _main(namespaces: list[str]) -> None:
    emulator = BenchEmulator(crd_paths=[str(default_crd_dir())],
                             traffic=CountingTraffic(OPERATOR_NAMESPACE))
    for namespace in (OPERATOR_NAMESPACE, *namespaces):
        emulator.ensure_namespace(namespace)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with serve(emulator) as url:
        print(f"READY {url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_main")
    parser.add_argument("--namespace", action="append", default=[])
    args = parser.parse_args(argv)
    asyncio.run(_main(list(args.namespace)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
