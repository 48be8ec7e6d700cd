"""KeyRing: constant-time verification of presented keys against a mounted Secret."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from apikey_operator.client._volume import read_snapshot, signature
from apikey_operator.client.errors import SourceUnavailable

logger = logging.getLogger("apikey_operator.client")


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
    ) -> None:
        self.directory = directory
        self.current_key = current_key
        self.previous_key = previous_key
        self.check_interval = check_interval
        self._clock = clock
        self._reload_lock = threading.Lock()
        self._keys = self._load()
        self._checked_at = clock()

    @classmethod
    def from_directory(
        cls,
        directory: str,
        current_key: str = "api-key",
        previous_key: str = "api-key-previous",
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> KeyRing:
        """A ring over a mounted Secret folder. Raises SourceUnavailable if the folder
        cannot be read; a folder without the current key yields a ring that refuses
        everything until the key appears."""
        return cls(directory, current_key, previous_key, check_interval, clock)

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
        if self._matches(keys, presented):
            return True
        # A miss may mean the key was rotated since the last check: look again at
        # once (one readlink; a reload only if the volume really changed).
        self._check(now, blocking=True)
        return self._keys is not keys and self._matches(self._keys, presented)

    def reload(self) -> None:
        """Re-read the folder now. Keeps the old keys if the folder cannot be read."""
        with self._reload_lock:
            self._reload_locked()

    @staticmethod
    def _matches(keys: _Keys, presented: str | bytes | None) -> bool:
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
        return accepted and bool(presented)

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
        logger.info(
            "API keys reloaded from %s: current %s, previous %s",
            self.directory,
            "present" if keys.has_current else "MISSING (refusing every key)",
            "accepted" if keys.has_previous else "absent",
        )

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
