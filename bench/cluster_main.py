"""A real control plane and a request-counting proxy in a process of their own.

Run as ``python -m bench.cluster_main --workdir DIR [--namespace NS ...]``: it starts
:class:`~apikey_operator.testing.controlplane.ControlPlane` (etcd, kube-apiserver,
kube-controller-manager, our CRDs) and a :class:`CountingProxy` in front of the
kube-apiserver, writes ``DIR/kubeconfig`` (the proxy's address, the admin token) for the
process under test, prints one line ``READY <json>`` on stdout (see :func:`ready_info`) and
runs until SIGTERM (or until its parent is gone). The JSON names the proxy, the kube-apiserver
(for the driver, which talks to it directly: its requests are never counted), the CA and
token, the process ids of etcd, kube-apiserver and kube-controller-manager (the driver reads
their CPU from /proc), and a plain-HTTP stats endpoint on loopback:

- ``GET /counts``: every request the proxy forwarded so far, keyed by who sent it (the
  benchmark driver, kopf's own client, or the operator's API client, told apart by their
  User-Agent), verb, resource, subresource and a tag: ``store`` for Secrets in the operator's
  namespace (the built-in store) and ``reason:<R>`` for Event POSTs, so that Events posted
  through kopf on the operator's behalf can be told from kopf's own log Events;
- ``GET /timeline?since=T``: each request's arrival time (monotonic clock), for latency work.

The proxy's CPU (a Python asyncio loop) stays off the operator's interpreter, and the
control plane's processes are the server's CPU the report shows.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import contextvars
import http.server
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp.web

from apikey_operator.testing.apiproxy import ApiProxy
from apikey_operator.testing.controlplane import ControlPlane, find_assets
from apikey_operator.testing.kube_traffic import RequestRecord, Traffic

OPERATOR_NAMESPACE = "apikey-operator"
TIMELINE_LENGTH = 200_000
BENCH_AGENT = "apikey-bench"

_actor: contextvars.ContextVar[str] = contextvars.ContextVar("actor", default="operator")
_event_reason: contextvars.ContextVar[str] = contextvars.ContextVar("event_reason", default="")


def actor_of(user_agent: str) -> str:
    """``bench`` (the driver), ``kopf`` (kopf's aiohttp client) or ``operator`` (the rest:
    ``apikey-operator/...``, our own aiohttp client)."""
    if user_agent.startswith(BENCH_AGENT):
        return "bench"
    if user_agent.startswith("kopf/"):
        return "kopf"
    return "operator"


def event_reason(body: bytes) -> str:
    """The ``reason`` of an Event body ('' when it is not one)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return ""
    return str(data.get("reason") or "") if isinstance(data, dict) else ""


class CountingTraffic(Traffic):
    """The proxy's request log, plus unbounded counts by (actor, verb, resource, ...)."""

    def __init__(self, operator_namespace: str = OPERATOR_NAMESPACE) -> None:
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
        """Requests that arrived after monotonic time ``since``: [time, actor, verb, resource,
        subresource, namespace, name, HTTP status]."""
        with self._lock:
            entries = [entry for entry in self.timeline if entry[0].at > since]
        return [[r.at, actor, r.verb, r.resource or "", r.subresource or "", r.namespace or "",
                 r.name or "", r.status] for r, actor in entries]

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self.by_actor.items())
        return [{"actor": a, "verb": v, "resource": r, "subresource": s, "tag": t, "count": n}
                for (a, v, r, s, t), n in items]


class CountingProxy(ApiProxy):
    """The project's API proxy, attributing each request to its sender (by User-Agent) and
    each Event POST to its reason before the request is recorded."""

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        # One task per request: these context variables are seen by this request's record().
        _actor.set(actor_of(request.headers.get("User-Agent", "")))
        reason = ""
        if request.method == "POST" and request.path.endswith("/events"):
            # aiohttp caches the body: the proxy forwards the same bytes.
            reason = event_reason(await request.read())
        _event_reason.set(reason)
        return await super()._handle(request)


class _StatsHandler(http.server.BaseHTTPRequestHandler):
    traffic: CountingTraffic
    proxy: ApiProxy

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/counts":
            data: dict[str, Any] = {"counts": self.traffic.snapshot(),
                                    "watches": self.proxy.open_watches,
                                    "now": time.monotonic()}
        elif url.path == "/timeline":
            since = float(parse_qs(url.query).get("since", ["0"])[0])
            data = {"requests": self.traffic.timeline_since(since)}
        else:
            self.send_error(404)
            return
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


def etcd_version(binary: str) -> str:
    """``v3.6.16`` from ``etcd --version`` ('unknown' if it does not say)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                             check=False).stdout
    except OSError:
        return "unknown"
    found = re.search(r"etcd Version:\s*(\S+)", out)
    return f"v{found.group(1)}" if found else "unknown"


def ready_info(plane: ControlPlane, proxy: ApiProxy, kubeconfig: pathlib.Path,
               stats_url: str) -> dict[str, Any]:
    """What the parent needs, as printed after ``READY``."""
    pids = {c.name: c.proc.pid for c in plane.children if c.proc is not None}
    return {
        "proxy_url": proxy.url,
        "apiserver_url": plane.url,
        "ca_file": str(plane.ca_file),
        "admin_token": plane.admin_token,
        "kubeconfig": str(kubeconfig),
        "stats_url": stats_url,
        "pids": pids,
        "kube_apiserver_version": plane.git_version,
        "etcd_version": etcd_version(find_assets()["etcd"]),
        "logs": str(plane.workdir),
    }


def serve(workdir: pathlib.Path, namespaces: Sequence[str]) -> None:
    """Start everything, print READY, wait for SIGTERM/SIGINT (or an orphaned parent), stop."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    workdir.mkdir(parents=True, exist_ok=True)
    plane_dir = workdir / "controlplane"
    plane = ControlPlane(namespaces=(OPERATOR_NAMESPACE, *namespaces), workdir=plane_dir)
    traffic = CountingTraffic(OPERATOR_NAMESPACE)
    proxy: CountingProxy | None = None
    stats: http.server.ThreadingHTTPServer | None = None
    try:
        plane.start()
        proxy = CountingProxy(plane.url, ca_file=plane.ca_file,
                              cert_file=plane.pki["serving.crt"],
                              key_file=plane.pki["serving.key"], traffic=traffic).start()
        kubeconfig = plane.write_kubeconfig(workdir / "kubeconfig", server=proxy.url)
        handler = type("StatsHandler", (_StatsHandler,), {"traffic": traffic, "proxy": proxy})
        stats = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=stats.serve_forever, name="bench-stats", daemon=True).start()
        stats_url = f"http://127.0.0.1:{stats.server_address[1]}"
        info = ready_info(plane, proxy, kubeconfig, stats_url)
        print("READY " + json.dumps(info), flush=True)
        # Nobody reads stdout any more: anything printed later goes to the log (stderr).
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
        print(f"control plane {info['kube_apiserver_version']} at {plane.url}, proxy at "
              f"{proxy.url}, pids {info['pids']}", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            if os.getppid() != parent:
                print("parent gone: stopping", file=sys.stderr, flush=True)
                break
            for child in plane.children:
                child.check_alive()
    finally:
        if stats is not None:
            stats.shutdown()
            stats.server_close()
        if proxy is not None:
            proxy.stop()
        plane.stop()
        # Keep the logs; the data (etcd preallocates its WAL), the keys and the token go.
        for folder in ("etcd", "pki"):
            with contextlib.suppress(OSError):
                shutil.rmtree(plane_dir / folder)
        for path in (plane_dir / "kubeconfig", workdir / "kubeconfig"):
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster_main")
    parser.add_argument("--workdir", type=pathlib.Path, required=True)
    parser.add_argument("--namespace", action="append", default=[])
    args = parser.parse_args(argv)
    serve(args.workdir, list(args.namespace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
