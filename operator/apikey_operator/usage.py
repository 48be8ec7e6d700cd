"""The usage monitor: one task for the whole operator that asks Prometheus how often the keys
in their grace are verified (the I/O around `grace`).

It runs only while some key is in its grace (an idle cluster makes no query), makes one
batched query for all of them at most once per `interval`, folds the answer into each key's
run of proofs (`grace.observe`) and wakes a key only when its decision changes: the grace can
end early, or PreviousKeyInUse is due. The key's own reconcile then reads the report and
decides again, in the pure core, with the same function.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from apikey_operator import grace, metrics
from apikey_operator.grace import Answer, KeyUsage, UsageWatch

logger = logging.getLogger(__name__)

# The contract: at most one query a minute. Tests may set a shorter interval on the Settings
# object directly (never through the configuration file, which enforces this floor).
DEFAULT_INTERVAL = timedelta(minutes=1)
DEFAULT_WINDOW = timedelta(minutes=5)
DEFAULT_TIMEOUT = timedelta(seconds=5)


@dataclass(frozen=True)
class UsageConfig:
    """`usage.prometheus` of the operator configuration (validated in `config`)."""

    url: str
    timeout: timedelta = DEFAULT_TIMEOUT
    interval: timedelta = DEFAULT_INTERVAL
    # Each answer counts verifications over this window; it must cover a few scrapes and at
    # least one interval, so that consecutive answers leave no time unseen.
    window: timedelta = DEFAULT_WINDOW


class UsageError(Exception):
    """The usage source did not answer usably (never ends a grace early)."""


class PrometheusSource:
    """Instant queries against the Prometheus HTTP API (`POST /api/v1/query`)."""

    def __init__(self, config: UsageConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None

    async def counts(self, promql: str) -> dict[str, float]:
        """Value by fingerprint of an instant vector; raises UsageError."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout.total_seconds()))
        url = self.config.url.rstrip("/") + "/api/v1/query"
        try:
            async with self._session.post(url, data={"query": promql}) as response:
                if response.status != 200:
                    raise UsageError(f"{url} answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UsageError(f"{url}: {type(exc).__name__}: {exc}"[:300]) from None
        return _vector(body, url)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _vector(body: object, url: str) -> dict[str, float]:
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(body, Mapping) or body.get("status") != "success" \
            or not isinstance(data, Mapping) or data.get("resultType") != "vector":
        raise UsageError(f"{url} answered no instant vector")
    counts: dict[str, float] = {}
    for item in data.get("result") or []:
        try:
            fingerprint = str(item["metric"].get("fingerprint", ""))
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            raise UsageError(f"{url} answered a malformed sample") from None
        if fingerprint and math.isfinite(value):
            counts[fingerprint] = value
    return counts


class UsageMonitor:
    """Watches the keys in their grace and keeps what the source last said of each."""

    def __init__(self, config: UsageConfig, wake: Callable[[str], None],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 source: Any = None) -> None:
        self.config = config
        self.source = source if source is not None else PrometheusSource(config)
        self._wake_key = wake
        self._clock = clock
        self.watches: dict[str, UsageWatch] = {}  # by ApiKey uid
        self.usage: dict[str, KeyUsage] = {}
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_query: float | None = None  # monotonic
        self._failing = False

    def watch(self, uid: str, watch: UsageWatch | None) -> None:
        """What the key's last reconcile said to watch (None: it is not in a grace)."""
        if watch is None:
            self.watches.pop(uid, None)
            self.usage.pop(uid, None)
            return
        before = self.watches.get(uid)
        if before is None or (before.current_fingerprint, before.previous_fingerprint) != (
                watch.current_fingerprint, watch.previous_fingerprint):
            self.usage.pop(uid, None)  # another rotation: its run starts afresh
        self.watches[uid] = watch
        self._changed.set()

    def report(self, uid: str) -> KeyUsage | None:
        return self.usage.get(uid)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.source.close()

    async def _run(self) -> None:
        interval = self.config.interval.total_seconds()
        while True:
            if not self.watches:
                self._changed.clear()
                await self._changed.wait()
                continue
            if self._last_query is not None:
                wait = self._last_query + interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
            try:
                await self.tick()
            except Exception:  # a bug here must not end usage-aware grace for good
                logger.exception("the usage query failed unexpectedly")

    async def tick(self) -> None:
        """One batched query for every watched key; wakes the keys whose decision changed."""
        # Counted from every tick, with or without a query: the loop never spins.
        self._last_query = time.monotonic()
        now = self._clock()
        # A key without earlyExpiry needs an answer only in its grace's last tenth (for
        # PreviousKeyInUse): until then it costs no query.
        watches = {uid: w for uid, w in self.watches.items()
                   if w.early_expiry is not None or w.valid_until - now < w.grace / 10}
        if not watches:
            return
        fingerprints = [fp for w in watches.values()
                        for fp in (w.current_fingerprint, w.previous_fingerprint)]
        promql = grace.query(fingerprints, self.config.window)
        at = self._clock()
        try:
            counts = await self.source.counts(promql)
        except UsageError as exc:
            metrics.USAGE_QUERIES.labels("failure").inc()
            if not self._failing:
                logger.warning("usage source unavailable, no grace ends early meanwhile: %s",
                               exc)
            self._failing = True
            answer = Answer(at=at, window=self.config.window, ok=False, counts={})
        else:
            metrics.USAGE_QUERIES.labels("success").inc()
            if self._failing:
                logger.info("usage source answers again")
            self._failing = False
            answer = Answer(at=at, window=self.config.window, ok=True, counts=counts)
        now = self._clock()
        for uid, watch in watches.items():
            if self.watches.get(uid) != watch:
                continue  # re-planned meanwhile: the next answer is about what it watches now
            usage = grace.observe(self.usage.get(uid), answer, watch.current_fingerprint,
                                  watch.previous_fingerprint)
            if usage is None:
                self.usage.pop(uid, None)
            else:
                self.usage[uid] = usage
            verdict = grace.decide(now, watch, usage)
            if verdict.end_early or verdict.report_in_use:
                self._wake_key(uid)
