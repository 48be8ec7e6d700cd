"""ApiKeyProvider: the current key from a source, cached, single-flight, failing closed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from apikey_operator.client.errors import SourceUnavailable
from apikey_operator.client.sources import KeySource, source_description

logger = logging.getLogger("apikey_operator.client")

OnError = Literal["fail", "serve-stale"]
ON_ERROR_CHOICES: tuple[OnError, ...] = ("fail", "serve-stale")


@dataclass(frozen=True)
class _Cached:
    value: str = field(repr=False)
    fetched_at: float


@dataclass(frozen=True)
class _Flight:
    """One source read in progress; every caller that needs a value waits on `future`."""

    future: concurrent.futures.Future[str]
    generation: int


@dataclass(frozen=True)
class _Failure:
    error: SourceUnavailable
    at: float


class ApiKeyProvider:
    """Returns the current key of `source`, cached for `ttl` seconds.

    * Concurrent callers that find the cache empty or expired share one source
      read (single-flight), across threads (`get`) and asyncio tasks (`aget`) alike.
    * Fails closed: when the source fails and no usable value is cached, the
      caller gets SourceUnavailable.
    * With ``on_error="serve-stale"`` an expired value is served for up to
      `max_stale` seconds past its expiry while the source keeps failing, with a
      warning log per failed read (never the key); after that it raises.
    * After a failed read the source is not asked again for `retry_interval`
      seconds, so a hot request path cannot hammer a store that is down.

    `clock` is a monotonic clock in seconds, injectable for tests.
    """

    def __init__(
        self,
        source: KeySource,
        ttl: float = 900.0,
        on_error: OnError = "fail",
        max_stale: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        retry_interval: float = 1.0,
    ) -> None:
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, not {on_error!r}")
        if ttl < 0 or max_stale < 0 or retry_interval < 0:
            raise ValueError("ttl, max_stale and retry_interval must not be negative")
        self.source = source
        self.ttl = float(ttl)
        self.on_error: OnError = on_error
        self.max_stale = float(max_stale)
        self.retry_interval = float(retry_interval)
        self._clock = clock
        self._description = source_description(source)
        self._lock = threading.Lock()
        self._cached: _Cached | None = None
        self._failure: _Failure | None = None
        self._inflight: _Flight | None = None
        # Bumped by invalidate(): a read that started before it must not refill the cache.
        self._generation = 0

    @classmethod
    def from_reference(
        cls,
        ref: str,
        *,
        client: Any = None,
        ttl: float = 900.0,
        on_error: OnError = "fail",
        max_stale: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        retry_interval: float = 1.0,
    ) -> ApiKeyProvider:
        """A provider reading the key a `status.storeRef` string names (``kubernetes:``,
        ``vault:``, ``aws:``, ``azure:``) or a mounted key (``file:<folder>/<data key>``).

        `client` is a ready SDK client for that store (else its default one is built);
        raises InvalidReference (a ValueError) for a malformed reference."""
        from apikey_operator.client.references import source_for_reference

        return cls(source_for_reference(ref, client=client), ttl=ttl, on_error=on_error,
                   max_stale=max_stale, clock=clock, retry_interval=retry_interval)

    def get(self) -> str:
        """The current key. Blocks while the source is read; raises SourceUnavailable."""
        value, flight, lead = self._begin()
        if flight is None:
            return value
        if lead:
            self._refresh(flight)
        try:
            return flight.future.result()
        except SourceUnavailable as exc:
            return self._fallback(exc)

    async def aget(self) -> str:
        """The current key, for asyncio code: the source is read in a worker thread,
        so the event loop never blocks on it. Raises SourceUnavailable."""
        value, flight, lead = self._begin()
        if flight is None:
            return value
        if lead:
            # The worker completes the flight itself, so followers are served even if
            # this task is cancelled while it waits.
            await asyncio.to_thread(self._refresh, flight)
        try:
            return await asyncio.wrap_future(flight.future)
        except SourceUnavailable as exc:
            return self._fallback(exc)

    def invalidate(self) -> None:
        """Forget the cached key so that the next call reads the source again
        (e.g. after the peer refused the key)."""
        with self._lock:
            self._cached = None
            self._failure = None
            self._inflight = None
            self._generation += 1

    def _begin(self) -> tuple[str, _Flight | None, bool]:
        """A usable cached value (flight None), or the read to wait for and whether we lead it."""
        with self._lock:
            now = self._clock()
            cached = self._cached
            if cached is not None and now < cached.fetched_at + self.ttl:
                return cached.value, None, False
            failure = self._failure
            if failure is not None and now < failure.at + self.retry_interval:
                return self._fallback_locked(failure.error, now), None, False
            if self._inflight is not None:
                return "", self._inflight, False
            future: concurrent.futures.Future[str] = concurrent.futures.Future()
            # RUNNING futures cannot be cancelled: a cancelled waiter in aget() must not
            # cancel the read that other callers are waiting for.
            future.set_running_or_notify_cancel()
            self._inflight = _Flight(future, self._generation)
            return "", self._inflight, True

    def _refresh(self, flight: _Flight) -> None:
        """Read the source once and publish the outcome to the cache and to the flight."""
        try:
            value = self.source.read()
        except SourceUnavailable as exc:
            self._publish_failure(flight, exc)
        except BaseException as exc:
            # Fail closed on anything a source raises, but neither quote nor chain it: a
            # malformed-secret error could carry part of the secret. Interrupts still
            # release the waiters before they propagate.
            error = SourceUnavailable(f"{self._description}: unexpected {type(exc).__name__}")
            self._publish_failure(flight, error)
            if not isinstance(exc, Exception):
                raise
        else:
            with self._lock:
                if flight.generation == self._generation:
                    self._cached = _Cached(value, self._clock())
                    self._failure = None
                if self._inflight is flight:
                    self._inflight = None
            flight.future.set_result(value)

    def _publish_failure(self, flight: _Flight, error: SourceUnavailable) -> None:
        with self._lock:
            now = self._clock()
            if flight.generation == self._generation:
                self._failure = _Failure(error, now)
                cached = self._cached
                if self._stale_usable(cached, now) and cached is not None:
                    logger.warning(
                        "Serving a stale API key from %s, %.0fs past its TTL (max_stale %.0fs): %s",
                        self._description,
                        now - cached.fetched_at - self.ttl,
                        self.max_stale,
                        error,
                    )
            if self._inflight is flight:
                self._inflight = None
        flight.future.set_exception(error)

    def _fallback(self, error: SourceUnavailable) -> str:
        with self._lock:
            return self._fallback_locked(error, self._clock())

    def _fallback_locked(self, error: SourceUnavailable, now: float) -> str:
        """After a failed read: the stale value if policy allows, else raise (fail closed)."""
        cached = self._cached
        if cached is not None and now < cached.fetched_at + self.ttl:
            return cached.value  # refreshed by someone else meanwhile
        if self._stale_usable(cached, now) and cached is not None:
            return cached.value
        if cached is not None and self.on_error == "serve-stale":
            # Past max_stale: drop the key rather than keep an unusable secret in memory.
            self._cached = None
            raise SourceUnavailable(
                f"no usable API key: {error}; the cached key expired more than "
                f"{self.max_stale:.0f}s ago (max_stale)"
            ) from error
        raise SourceUnavailable(f"no API key available: {error}") from error

    def _stale_usable(self, cached: _Cached | None, now: float) -> bool:
        return (
            self.on_error == "serve-stale"
            and cached is not None
            and now <= cached.fetched_at + self.ttl + self.max_stale
        )
