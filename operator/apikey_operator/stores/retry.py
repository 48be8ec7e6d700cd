"""Shared plumbing for the SDK-backed stores: blocking calls, config blocks, names.

Each store owns one `BlockingRunner`: a private thread pool and a semaphore of
`maxConcurrency` slots, so a slow backend can neither starve kopf's own
executor nor be flooded by a burst of reconciliations. Every store operation
runs as one blocking function under a `Deadline`; the coroutine gives up when
the deadline passes and the blocking side checks it before each request, so
an abandoned operation stops at its next request instead of carrying on in
the background. Exceptions are mapped to `StoreError` by the store's own
classifier: the SDK's exception types never leave the store module.

`ConfigReader` validates a store's config block with one message per bad
field, and `check_ref_names` keeps derived paths inside their prefix.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from apikey_operator import redaction
from apikey_operator.stores.base import (
    KeyRef,
    StoreConfigError,
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


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def check_ref_names(ref: KeyRef) -> None:
    """Refuse names the API server would not allow, so a derived path cannot escape its prefix."""
    if not _DNS_LABEL.fullmatch(ref.namespace):
        raise StoreError(f"namespace {ref.namespace!r} is not a DNS-1123 label")
    if not _DNS_SUBDOMAIN.fullmatch(ref.name) or ".." in ref.name:
        raise StoreError(f"name {ref.name!r} is not a DNS-1123 subdomain")


class ConfigReader:
    """Reads one store's config block, collecting one message per bad field.

    Call `done()` last: it raises a single StoreConfigError listing every problem,
    so an operator with a bad config refuses to start and says everything at once.
    """

    def __init__(self, store_name: str, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.store_name = store_name
        self.raw = raw
        self.prefix = prefix
        self.problems: list[str] = []
        self._seen: set[str] = {"type"}

    def problem(self, field: str, message: str) -> None:
        self.problems.append(f"{self.prefix}{field}: {message}")

    def _get(self, field: str) -> Any:
        self._seen.add(field)
        return self.raw.get(field)

    def string(
        self,
        field: str,
        default: str | None = None,
        *,
        pattern: re.Pattern[str] | None = None,
        hint: str = "",
    ) -> str:
        """A string field; '' when missing without a default (a problem is recorded)."""
        value = self._get(field)
        if value is None:
            if default is None:
                self.problem(field, "is required")
                return ""
            return default
        if not isinstance(value, str) or not value:
            self.problem(field, "must be a non-empty string")
            return default or ""
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(field, f"{value!r} is not valid{': ' + hint if hint else ''}")
            return default or ""
        return value

    def optional_string(self, field: str) -> str | None:
        value = self._get(field)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.problem(field, "must be a string")
            return None
        return value

    def number(self, field: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self._get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(field, "must be a number")
            return default
        if not minimum <= value <= maximum:
            self.problem(field, f"must be between {minimum:g} and {maximum:g}, got {value:g}")
            return default
        return float(value)

    def integer(self, field: str, default: int, *, minimum: int, maximum: int) -> int:
        value = self._get(field)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(field, "must be an integer")
            return default
        if not minimum <= value <= maximum:
            self.problem(field, f"must be between {minimum} and {maximum}, got {value}")
            return default
        return value

    def boolean(self, field: str, default: bool) -> bool:
        value = self._get(field)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.problem(field, "must be true or false")
            return default
        return value

    def section(self, field: str, *, required: bool = False) -> ConfigReader:
        """A nested block, read with its own reader whose problems join this one's."""
        value = self._get(field)
        if value is None:
            if required:
                self.problem(field, "is required")
            value = {}
        elif not isinstance(value, Mapping):
            self.problem(field, "must be a mapping")
            value = {}
        child = ConfigReader(self.store_name, value, f"{self.prefix}{field}.")
        child.problems = self.problems
        child._seen.discard("type")
        return child

    def readable_file(self, field: str, default: str | None = None) -> str:
        """A path to a file that exists and can be read now."""
        path = self.string(field, default)
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                self.problem(field, f"cannot read {path}: {exc.strerror or type(exc).__name__}")
        return path

    def no_unknown_fields(self) -> None:
        """Record every field nobody read; `null` counts as absent, as YAML users expect."""
        for field, value in self.raw.items():
            if field not in self._seen and value is not None:
                self.problem(str(field), "is not a known field")

    def done(self) -> None:
        """Raise StoreConfigError listing every problem found, if any."""
        if self.problems:
            details = "; ".join(self.problems)
            raise StoreConfigError(f"store {self.store_name!r} is misconfigured: {details}")


# SDK loggers whose DEBUG records carry request or response bodies, i.e. keys.
BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.awsrequest")


class _DropDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


_DROP_DEBUG = _DropDebug()


# SDK namespaces kept at INFO whatever the root level: several of their DEBUG loggers
# print request parameters (a SecretString is a key), and new ones appear across releases.
SDK_NAMESPACES = ("botocore", "boto3", "s3transfer", "hvac", "urllib3", "azure", "msal")


def silence_sdk_body_logging(names: tuple[str, ...] = BODY_LOGGERS) -> None:
    """Drop the DEBUG records of SDK loggers that print request/response bodies, so
    turning on DEBUG logging can never write a key to a log. Idempotent."""
    for name in names:
        logger = logging.getLogger(name)
        if _DROP_DEBUG not in logger.filters:
            logger.addFilter(_DROP_DEBUG)
    for namespace in SDK_NAMESPACES:
        sdk_logger = logging.getLogger(namespace)
        if sdk_logger.getEffectiveLevel() < logging.INFO or sdk_logger.level == logging.NOTSET:
            sdk_logger.setLevel(logging.INFO)


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
