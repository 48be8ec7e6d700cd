"""`apikey-operator run` with every store wrapped for counting, as a benchmark child process.

Run as ``python -m bench.operator_main --stats-port-file FILE -- run --config ...``: the
arguments after ``--`` go to the real ``apikey-operator`` command line unchanged. Before
kopf starts, the store builder the handlers use is wrapped so that each store reports
to :data:`bench.instrumented_store.STATS`; a small HTTP server on a free loopback port
(written to FILE) answers ``GET /stats`` (``?reset_peaks=1`` starts a new peak window).
The operator itself is not changed. With ``APIKEY_BENCH_PROFILE=FILE`` in the environment,
SIGUSR1 starts cProfile on the operator's main thread (kopf's event loop) and a second
SIGUSR1 writes the profile to FILE: the driver profiles one scenario at a time. With
``APIKEY_BENCH_HEAP=FILE``, SIGUSR2 writes what holds the memory to FILE: live objects by
type (from the garbage collector), the RSS before and after ``malloc_trim`` (which it calls:
how much of the RSS is free memory glibc kept) and, when started with
``PYTHONTRACEMALLOC=N``, the allocation sites holding the most bytes.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import ctypes
import gc
import http.server
import json
import os
import pathlib
import signal
import sys
import threading
import tracemalloc
from typing import Any
from urllib.parse import parse_qs, urlsplit

from apikey_operator import cli, handlers
from apikey_operator.config import Settings, build_stores
from apikey_operator.kube import KubeClient
from apikey_operator.stores.base import Store
from bench.instrumented_store import STATS, InstrumentedStore

PROFILE_ENV = "APIKEY_BENCH_PROFILE"
HEAP_ENV = "APIKEY_BENCH_HEAP"


def _instrument_stores() -> None:
    """The CLI builds the stores (handlers.build_operator) through this name: wrap it."""

    def build_instrumented(settings: Settings, kube: KubeClient | None = None) -> dict[str, Store]:
        return {name: InstrumentedStore(store)
                for name, store in build_stores(settings, kube).items()}

    handlers.build_stores = build_instrumented  # type: ignore[attr-defined]


class _StatsHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/stats":
            self.send_error(404)
            return
        reset = parse_qs(url.query).get("reset_peaks", ["0"])[0] == "1"
        payload = json.dumps(STATS.snapshot(reset_peaks=reset)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


def _serve_stats(port_file: pathlib.Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatsHandler)
    threading.Thread(target=server.serve_forever, name="bench-stats", daemon=True).start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(port_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.operator_main")
    parser.add_argument("--stats-port-file", required=True, type=pathlib.Path)
    parser.add_argument("operator_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = list(args.operator_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    _instrument_stores()
    _serve_stats(args.stats_port_file)
    profile_path = os.environ.get(PROFILE_ENV)
    if profile_path:
        _profile_on_signal(profile_path)
    heap_path = os.environ.get(HEAP_ENV)
    if heap_path:
        signal.signal(signal.SIGUSR2, lambda _s, _f: _dump_heap(heap_path))
    return cli.main(rest)


def _rss_kb() -> int:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _dump_heap(path: str) -> None:
    """Write the 40 most numerous live object types and, if tracemalloc traces, the 40
    allocation sites (8 frames deep) holding the most bytes."""
    gc.collect()
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    lines = [f"{count:>9} {name}" for name, count in counts.most_common(40)]
    before = _rss_kb()
    trimmed = ctypes.CDLL("libc.so.6").malloc_trim(0) if sys.platform == "linux" else 0
    lines.append(f"rss before malloc_trim: {before} kB, after: {_rss_kb()} kB ({trimmed})")
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot()
        total = sum(stat.size for stat in snapshot.statistics("filename"))
        lines.append(f"traced: {total / 1e6:.1f} MB")
        for stat in snapshot.statistics("traceback")[:40]:
            lines.append(f"{stat.size / 1e6:8.2f} MB {stat.count:>8} blocks")
            lines.extend(f"        {frame}" for frame in stat.traceback.format()[-16:])
    pathlib.Path(path).write_text("\n".join(lines) + "\n")


def _profile_on_signal(path: str) -> None:
    """SIGUSR1 starts cProfile on the main thread (kopf's loop); the next one writes ``path``.

    A window of the driver's choosing (one scenario) is profiled, not the start-up.
    """
    profiler = cProfile.Profile()
    running = False

    def toggle(_signum: int, _frame: object) -> None:
        nonlocal running
        if running:
            profiler.disable()
            profiler.dump_stats(path)
        else:
            profiler.enable()
        running = not running

    signal.signal(signal.SIGUSR1, toggle)

if __name__ == "__main__":
    sys.exit(main())
