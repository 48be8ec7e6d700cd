"""KeyRing: constant-time verification of presented keys against a mounted Secret.

With `metrics=True` (or a prometheus-client `CollectorRegistry`) the ring counts what it
verifies in `apikey_keyring_verifications_total{fingerprint, role, result}`, by the
fingerprint of the key that matched, never the key; the operator reads these counts to end
a rotation's grace early once the previous key is provably unused. prometheus-client is an
optional extra (`apikey-operator[client-metrics]`), imported only when counting is asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from apikey_operator.client._volume import read_snapshot, signature
from apikey_operator.client.errors import SourceUnavailable

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger("apikey_operator.client")
METRIC_NAME = "apikey_keyring_verifications_total"
# One counter per registry: every KeyRing of a process shares it (a second registration of
# the same name would be refused by prometheus-client).
# Keyed by the registry itself, weakly: an id() would be reused by a later registry once the
# first is garbage collected, which would then get a counter registered elsewhere.
_COUNTERS: weakref.WeakKeyDictionary[CollectorRegistry, Any] = weakref.WeakKeyDictionary()
_COUNTERS_LOCK = threading.Lock()


def _counter(registry: CollectorRegistry | None) -> Any:
    """The verification counter in `registry` (None: prometheus-client's default)."""
    from prometheus_client import REGISTRY, Counter

    target = registry if registry is not None else REGISTRY
    with _COUNTERS_LOCK:
        counter = _COUNTERS.get(target)
        if counter is None:
            counter = Counter(METRIC_NAME, "API keys verified by KeyRing, by the fingerprint "
                              "of the key that matched (never the key)",
                              ["fingerprint", "role", "result"], registry=target)
            _COUNTERS[target] = counter
        return counter


def _digest(value: bytes) -> bytes:
    # Comparing fixed-size digests instead of the raw values keeps the
    # comparison time independent of the presented key's length too.
    return hashlib.sha256(value).digest()


@dataclass(frozen=True)
class _Keys:
    """Digests of the accepted keys of one volume version; a random digest stands in
    for an absent key so that every verification does the same work."""

    signature: tuple[object, ...]
    current: bytes = field(repr=False)
    previous: bytes = field(repr=False)
    has_current: bool
    has_previous: bool

    def fingerprint(self, role: str) -> str:
        """The operator's fingerprint (`sha256:` + 12 hex digits of SHA-256 of the key): the
        digest already is that SHA-256, so no key is kept or hashed again."""
        digest = self.current if role == "current" else self.previous
        return "sha256:" + digest.hex()[:12]


def _keys_from(
    signature_: tuple[object, ...], current: bytes | None, previous: bytes | None
) -> _Keys:
    current = current.strip() if current else None
    previous = previous.strip() if previous else None
    return _Keys(
        signature=signature_,
        current=_digest(current) if current else secrets.token_bytes(32),
        previous=_digest(previous) if previous else secrets.token_bytes(32),
        has_current=bool(current),
        has_previous=bool(previous),
    )


class KeyRing:
    """Accepts the current key and, while its file is present, the previous key.

    `verify` is constant time and never logs the presented value. The ring
    re-reads the folder when it changes: it checks the volume's ``..data`` target
    (one readlink) at most every `check_interval` seconds, and also whenever a
    presented key does not match, so that a client that already switched to a
    freshly rotated key is never refused because this process looked too early.
    """

    def __init__(
        self,
        directory: str,
        current_key: str = "api-key",
        previous_key: str = "api-key-previous",
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: bool | CollectorRegistry = False,
    ) -> None:
        self.directory = directory
        self.current_key = current_key
        self.previous_key = previous_key
        self.check_interval = check_interval
        self._clock = clock
        self._reload_lock = threading.Lock()
        self._counter = None if metrics is False else _counter(
            None if metrics is True else metrics)
        self._keys = self._load()
        self._announce(self._keys)
        self._checked_at = clock()

    @classmethod
    def from_directory(
        cls,
        directory: str,
        current_key: str = "api-key",
        previous_key: str = "api-key-previous",
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: bool | CollectorRegistry = False,
    ) -> KeyRing:
        """A ring over a mounted Secret folder. Raises SourceUnavailable if the folder
        cannot be read; a folder without the current key yields a ring that refuses
        everything until the key appears. `metrics`: count verifications (True: in
        prometheus-client's default registry; a registry: in that one)."""
        return cls(directory, current_key, previous_key, check_interval, clock, metrics)

    @property
    def has_current(self) -> bool:
        return self._keys.has_current

    @property
    def has_previous(self) -> bool:
        """True while the previous key (a rotation's grace period) is accepted."""
        return self._keys.has_previous

    def verify(self, presented: str | bytes | None) -> bool:
        """True if `presented` is the current key or, during a grace, the previous one."""
        now = self._clock()
        if now - self._checked_at >= self.check_interval:
            self._check(now, blocking=False)
        keys = self._keys
        role = self._matches(keys, presented)
        if not role:
            # A miss may mean the key was rotated since the last check: look again at
            # once (one readlink; a reload only if the volume really changed).
            self._check(now, blocking=True)
            if self._keys is not keys:
                keys = self._keys
                role = self._matches(keys, presented)
        if self._counter is not None:
            # Counted after the decision, from its outcome only: the comparison above does
            # the same work whichever key matched.
            if role:
                self._counter.labels(keys.fingerprint(role), role, "accepted").inc()
            else:
                self._counter.labels("", "", "rejected").inc()
        return bool(role)

    def reload(self) -> None:
        """Re-read the folder now. Keeps the old keys if the folder cannot be read."""
        with self._reload_lock:
            self._reload_locked()

    @staticmethod
    def _matches(keys: _Keys, presented: str | bytes | None) -> str:
        """"current" or "previous" for the key that matched, "" when none did."""
        if presented is None:
            presented = b""
        if isinstance(presented, str):
            # surrogatepass: every str has exactly one encoding, so no two differ only
            # in characters that an error handler would have replaced.
            presented = presented.encode("utf-8", "surrogatepass")
        digest = _digest(presented)
        # Compare against both, always, so that timing cannot tell which one matched.
        current_ok = hmac.compare_digest(digest, keys.current)
        previous_ok = hmac.compare_digest(digest, keys.previous)
        # Fail closed: without a current key nothing is accepted, not even the previous one
        # (a missing current file is a broken mount, not a grace period).
        accepted = keys.has_current & (current_ok | (previous_ok & keys.has_previous))
        if not (accepted and bool(presented)):
            return ""
        return "current" if current_ok else "previous"

    def _check(self, now: float, blocking: bool) -> None:
        """Reload if the volume changed since the keys were read. Without `blocking`,
        leave it to a thread that is already checking."""
        if not self._reload_lock.acquire(blocking=blocking):
            return
        try:
            self._checked_at = now
            if signature(self.directory, self._names()) != self._keys.signature:
                self._reload_locked()
        finally:
            self._reload_lock.release()

    def _reload_locked(self) -> None:
        try:
            keys = self._load()
        except SourceUnavailable as exc:
            logger.warning("Keeping the loaded API keys: cannot re-read them: %s", exc)
            return
        self._keys = keys
        self._announce(keys)
        logger.info(
            "API keys reloaded from %s: current %s, previous %s",
            self.directory,
            "present" if keys.has_current else "MISSING (refusing every key)",
            "accepted" if keys.has_previous else "absent",
        )

    def _announce(self, keys: _Keys) -> None:
        """Export a zero for every key this ring accepts, before any request: a series that
        exists from the start tells "loaded and not used" apart from "not reporting", and
        lets Prometheus see a key's first verification as an increase."""
        if self._counter is None:
            return
        for role, present in (("current", keys.has_current), ("previous", keys.has_previous)):
            if present:
                self._counter.labels(keys.fingerprint(role), role, "accepted")
        self._counter.labels("", "", "rejected")

    def _load(self) -> _Keys:
        snapshot = read_snapshot(self.directory, self._names())
        return _keys_from(
            snapshot.signature,
            snapshot.values[self.current_key],
            snapshot.values[self.previous_key],
        )

    def _names(self) -> Iterable[str]:
        return (self.current_key, self.previous_key)


class Headers(Protocol):
    """Anything with ``items()`` of header names and values: a dict, http.server's
    message, aiohttp's CIMultiDict, a WSGI/ASGI adapter."""

    def items(self) -> Iterable[tuple[str, str]]: ...


def key_from_headers(headers: Headers) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or else ``X-API-Key: <key>``;
    None if neither carries one. Header names are matched case-insensitively."""
    bearer: str | None = None
    api_key: str | None = None
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == "authorization" and bearer is None:
            scheme, _, credentials = value.strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                bearer = credentials.strip()
        elif lowered == "x-api-key" and api_key is None and value.strip():
            api_key = value.strip()
    return bearer if bearer is not None else api_key
