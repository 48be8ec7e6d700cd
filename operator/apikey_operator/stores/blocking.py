"""Blocking SDK calls off the event loop, each under a deadline.

Each store owns one `BlockingRunner`: a private thread pool and a semaphore of
`maxConcurrency` slots, so a slow backend can neither starve kopf's own
executor nor be flooded by a burst of reconciliations. Every store operation
runs as one blocking function under a `Deadline`; the coroutine gives up when
the deadline passes and the blocking side checks it before each request, so
an abandoned operation stops at its next request instead of carrying on in
the background. Exceptions are mapped to `StoreError` by the store's own
classifier: the SDK's exception types never leave the store module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from apikey_operator import redaction
from apikey_operator.stores.base import (
    KeyRef,
    StoreError,
    StoreState,
    StoreUnavailable,
    VersionDocument,
)

T = TypeVar("T")

DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_TIMEOUT_SECONDS = 10.0


class DeadlineExceeded(Exception):
    """The operation's time budget ran out before its next request."""


class Deadline:
    """A time budget for one store operation, shared by all the requests it makes."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        """Seconds left; raises DeadlineExceeded when none are."""
        left = self._end - self._clock()
        if left <= 0:
            raise DeadlineExceeded()
        return left


# (exception, operation) -> the StoreError to raise, or None when not recognised.
Classifier = Callable[[BaseException, str], StoreError | None]


class BlockingRunner:
    """Runs blocking store operations in threads, bounded in number and in time."""

    def __init__(
        self,
        store_name: str,
        classify: Classifier,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.store_name = store_name
        self.timeout = timeout
        self._classify = classify
        self.max_concurrency = max_concurrency
        # One semaphore per event loop: asyncio primitives are bound to the loop that
        # first waits on them, and a store may outlive a loop (tests, CLI helpers).
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_concurrency, thread_name_prefix=f"store-{store_name}"
        )

    async def run(self, operation: str, fn: Callable[[Deadline], T]) -> T:
        """`fn(deadline)` in a worker thread; its errors arrive as StoreError subclasses.

        Timeouts, the deadline and whatever the classifier calls transient become
        StoreUnavailable; anything unrecognised becomes a plain StoreError naming only
        the exception type (SDK messages can echo request bodies, so they are dropped).
        """
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.max_concurrency)
        async with slots:
            deadline = Deadline(self.timeout)
            future = loop.run_in_executor(self._pool, functools.partial(fn, deadline))
            try:
                return await asyncio.wait_for(future, timeout=self.timeout)
            except (TimeoutError, DeadlineExceeded):
                raise StoreUnavailable(
                    f"store {self.store_name!r}: {operation} timed out after {self.timeout:g}s"
                ) from None
            except StoreError:
                raise
            except Exception as exc:
                mapped = self._classify(exc, operation)
                if mapped is None:
                    mapped = StoreError(
                        f"store {self.store_name!r}: {operation} failed ({type(exc).__name__})"
                    )
                raise mapped from None

    def close(self) -> None:
        """Stop accepting work; threads still running finish their current request."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class BlockingStore:
    """The async Store methods over a backend's blocking implementation.

    Subclasses set `_runner` and implement the `_read`, `_write_pending`, `_promote`,
    `_revoke`, `_delete` and `_check_document` steps; each runs in the runner's threads
    under one deadline.
    """

    _runner: BlockingRunner

    def _check_document(self, document: VersionDocument) -> None:
        raise NotImplementedError

    def _read(self, ref: KeyRef, deadline: Deadline) -> StoreState:
        raise NotImplementedError

    def _write_pending(self, ref: KeyRef, document: VersionDocument,
                       deadline: Deadline) -> VersionDocument:
        raise NotImplementedError

    def _promote(self, ref: KeyRef, version: int, previous_valid_until: datetime,
                 deadline: Deadline) -> None:
        raise NotImplementedError

    def _revoke(self, ref: KeyRef, version: int, deadline: Deadline) -> None:
        raise NotImplementedError

    def _delete(self, ref: KeyRef, deadline: Deadline) -> None:
        raise NotImplementedError

    async def read(self, ref: KeyRef) -> StoreState:
        return await self._runner.run("read", lambda d: self._read(ref, d))

    async def write_pending(self, ref: KeyRef, document: VersionDocument) -> VersionDocument:
        redaction.register(document.key)
        if not ref.uid:
            raise StoreError("an entry can only be created for an ApiKey with a uid")
        self._check_document(document)
        return await self._runner.run(
            "write_pending", lambda d: self._write_pending(ref, document, d)
        )

    async def promote(self, ref: KeyRef, version: int, previous_valid_until: datetime) -> None:
        await self._runner.run(
            "promote", lambda d: self._promote(ref, version, previous_valid_until, d)
        )

    async def revoke(self, ref: KeyRef, version: int) -> None:
        await self._runner.run("revoke", lambda d: self._revoke(ref, version, d))

    async def delete(self, ref: KeyRef) -> None:
        await self._runner.run("delete", lambda d: self._delete(ref, d))
