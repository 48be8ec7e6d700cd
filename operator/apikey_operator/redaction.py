"""The keys this process has generated or read, as digests, so log redaction can find them.

Only SHA-256 digests are kept (never the keys), bounded in number; the log
filter checks candidate tokens of a plausible length against them.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

MAX_REMEMBERED = 200_000
_digests: OrderedDict[bytes, None] = OrderedDict()
# Test harnesses subscribe here to learn every key, then scan logs, events and status for them.
_observers: list[Callable[[str], None]] = []


def add_observer(observer: Callable[[str], None]) -> None:
    _observers.append(observer)


def remove_observer(observer: Callable[[str], None]) -> None:
    if observer in _observers:
        _observers.remove(observer)


def register(key: str) -> None:
    """Remember `key` (as a digest) so that it is redacted if anything tries to log it."""
    for observer in _observers:
        observer(key)
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    _digests[digest] = None
    _digests.move_to_end(digest)
    while len(_digests) > MAX_REMEMBERED:
        _digests.popitem(last=False)


def is_registered(candidate: str) -> bool:
    return hashlib.sha256(candidate.encode("utf-8")).digest() in _digests
