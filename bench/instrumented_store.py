"""A store wrapper that counts calls, their time, and how many run at once.

The operator process under benchmark wraps each configured store in one of these
(see ``bench.operator_main``); the driver reads the figures over HTTP. Everything
runs on the operator's event loop except :meth:`StoreStats.snapshot`, which the stats
thread calls, hence the lock.
"""

from __future__ import annotations

import collections
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from apikey_operator.stores.base import KeyRef, Store, StoreState, VersionDocument

T = TypeVar("T")
BUCKET_SECONDS = 0.1


class StoreStats:
    """Calls per (store, method), seconds spent, peak concurrency, peak start rate.

    ``peak_in_flight`` and ``peak_starts_per_bucket`` are the maxima since the last
    :meth:`snapshot` with ``reset_peaks``: one scenario's herd, not the whole run's.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: collections.Counter[tuple[str, str]] = collections.Counter()
        self.errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self.seconds: collections.defaultdict[tuple[str, str], float] = (
            collections.defaultdict(float))
        self.in_flight = 0
        self.peak_in_flight = 0
        self._bucket = -1
        self._bucket_starts = 0
        self.peak_starts_per_bucket = 0

    def started(self, store: str, method: str) -> float:
        now = time.monotonic()
        bucket = int(now / BUCKET_SECONDS)
        with self._lock:
            self.calls[(store, method)] += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            if bucket != self._bucket:
                self._bucket, self._bucket_starts = bucket, 0
            self._bucket_starts += 1
            self.peak_starts_per_bucket = max(self.peak_starts_per_bucket, self._bucket_starts)
        return now

    def finished(self, store: str, method: str, started: float, failed: bool) -> None:
        elapsed = time.monotonic() - started
        with self._lock:
            self.in_flight -= 1
            self.seconds[(store, method)] += elapsed
            if failed:
                self.errors[(store, method)] += 1

    def snapshot(self, reset_peaks: bool = False) -> dict[str, Any]:
        """Plain JSON: cumulative counters, current peaks (then reset if asked)."""
        with self._lock:
            data = {
                "calls": [{"store": s, "method": m, "count": n, "seconds": self.seconds[(s, m)],
                           "errors": self.errors[(s, m)]} for (s, m), n in self.calls.items()],
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "peak_starts_per_100ms": self.peak_starts_per_bucket,
            }
            if reset_peaks:
                self.peak_in_flight = self.in_flight
                self.peak_starts_per_bucket = 0
        return data


STATS = StoreStats()


class InstrumentedStore:
    """Delegates every Store method to ``inner`` and reports it to ``stats``."""

    type_name: ClassVar[str] = "instrumented"

    def __init__(self, inner: Store, stats: StoreStats = STATS) -> None:
        self.inner = inner
        self.name = inner.name
        # Declared, not discovered: the planner reads a store's capabilities from here.
        self.capabilities = inner.capabilities
        self.stats = stats

    async def _timed(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        started = self.stats.started(self.name, method)
        failed = True
        try:
            result = await call()
            failed = False
            return result
        finally:
            self.stats.finished(self.name, method, started, failed)

    def location(self, ref: KeyRef) -> str:
        return self.inner.location(ref)

    async def read(self, ref: KeyRef) -> StoreState:
        return await self._timed("read", lambda: self.inner.read(ref))

    async def write_pending(self, ref: KeyRef, document: VersionDocument) -> VersionDocument:
        return await self._timed("write_pending", lambda: self.inner.write_pending(ref, document))

    async def promote(self, ref: KeyRef, version: int, previous_valid_until: datetime) -> None:
        await self._timed("promote",
                          lambda: self.inner.promote(ref, version, previous_valid_until))

    async def revoke(self, ref: KeyRef, version: int) -> None:
        await self._timed("revoke", lambda: self.inner.revoke(ref, version))

    async def delete(self, ref: KeyRef) -> None:
        await self._timed("delete", lambda: self.inner.delete(ref))

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:
        """The optional methods (``write_initial``, ...) the inner store's capabilities
        name, timed like the rest."""
        if name == "inner":
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def timed(*args: Any, **kwargs: Any) -> Any:
            return await self._timed(name, lambda: attr(*args, **kwargs))

        return timed
