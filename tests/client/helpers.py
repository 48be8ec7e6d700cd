"""Shared test doubles for the consumer library tests."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from apikey_operator.client import KeySource, SourceUnavailable
from apikey_operator.testing.servers import free_port

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "consumer"


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


def library_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the library itself logged (SDK debug logs, if enabled elsewhere, are not ours)."""
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("apikey_operator")
    )


def document(key: str, version: int) -> str:
    """A stand-in for the operator's VersionDocument JSON (the client never parses it)."""
    return json.dumps({"version": version, "key": key})


def load_example(name: str) -> ModuleType:
    """Import examples/consumer/<name>.py (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def status_with(url: str, key: str | None) -> int:
    """The HTTP status of a GET presenting `key` in X-API-Key (none if None)."""
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _healthy(base: str) -> bool:
    try:
        return status_with(f"{base}/healthz", None) == 200
    except OSError:
        return False


@contextlib.contextmanager
def example_service(keys_dir: str, log_path: Path) -> Iterator[str]:
    """Run examples/consumer/service.py as its own process on a free port; yields its
    base URL. Its log is left at `log_path` for the caller to inspect."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLE / "service.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--keys-dir",
                keys_dir,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while not _healthy(base):
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "the example service did not start"
                time.sleep(0.05)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=10)
