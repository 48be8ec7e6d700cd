"""Shared test doubles for the consumer library tests."""

from __future__ import annotations

import json
import threading

from apikey_operator.client import KeySource, SourceUnavailable


class FakeClock:
    """A monotonic clock that only moves when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingSource:
    """Wraps a source and counts the reads that reach it; `gate` can hold reads
    back so that concurrent callers pile up on an empty cache."""

    def __init__(self, inner: KeySource) -> None:
        self.inner = inner
        self.description = f"counting({inner.description})"
        self.calls = 0
        self._lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()

    def read(self) -> str:
        with self._lock:
            self.calls += 1
        # The value is taken before the gate, so a held read returns what the
        # source held when the read started.
        value = self.inner.read()
        self.gate.wait(timeout=30)
        return value


class ScriptedSource:
    """A source whose answer the test sets: a key, or an outage."""

    description = "scripted:test"

    def __init__(self, key: str) -> None:
        self.key = key
        self.down = False

    def read(self) -> str:
        if self.down:
            raise SourceUnavailable(f"{self.description}: cannot connect")
        return self.key


def document(key: str, version: int) -> str:
    """A stand-in for the operator's VersionDocument JSON (the client never parses it)."""
    return json.dumps({"version": version, "key": key})
