"""A suite-wide leak scan: every key seen during the test run must never appear where users or
log pipelines look. Register it from the top-level conftest::

    pytest_plugins = ["tests.support.faults_leakscan"]

What is recorded as a key: everything `redaction.register` sees in this process (the
in-thread operator, stores, generators), and every key held in any consumer Secret or
built-in store Secret of every local cluster when it stops (this covers operator child
processes too, for the keys still valid at that moment).

Where keys must not appear: every log record of this process at any level, after the
operator's redaction (message, exception text and extra fields, as the JSON and text
formats render them, so exception messages too); the logs of every `OperatorProcess`;
every local cluster's Events, ApiKeys and RotationPolicies (status, annotations,
labels) and Secret metadata; the Prometheus metrics output.

The session-scoped autouse fixture `suite_leak_scan` fails the run at its end with the
sources and fingerprints (never the keys) of every leak.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apikey_operator import redaction
from apikey_operator.keys import fingerprint
from apikey_operator.logging import install_redaction

# Keys use base62, hex or base64url bodies and [a-z0-9_] prefixes: a leaked key is a
# substring of a maximal run of these characters.
_TOKEN = re.compile(r"[0-9A-Za-z_\-]{16,}")
_MIN_KEY_LENGTH = 16
_SKIP_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


class LeakScan:
    """Keys on one side, candidate tokens (with where they were seen) on the other."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[int, set[str]] = {}
        self._tokens: dict[str, str] = {}
        self.process_logs: set[Path] = set()
        self.texts_seen = 0

    def add_key(self, key: str) -> None:
        if len(key) >= _MIN_KEY_LENGTH:
            with self._lock:
                self._keys.setdefault(len(key), set()).add(key)

    def add_text(self, source: str, text: str) -> None:
        tokens = _TOKEN.findall(text)
        with self._lock:
            self.texts_seen += 1
            for token in tokens:
                self._tokens.setdefault(token, source)

    @property
    def key_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._keys.values())

    def findings(self) -> list[tuple[str, str]]:
        """(source, fingerprint) of every recorded key found in any recorded text."""
        for path in sorted(self.process_logs):
            with contextlib.suppress(OSError):
                self.add_text(f"operator process log {path.name}",
                              path.read_text(errors="replace"))
        with self._lock:
            by_length = {n: set(v) for n, v in self._keys.items()}
            tokens = dict(self._tokens)
        found: set[tuple[str, str]] = set()
        for token, source in tokens.items():
            for length, keys in by_length.items():
                for start in range(len(token) - length + 1):
                    piece = token[start:start + length]
                    if piece in keys:
                        found.add((source, fingerprint(piece)))
        return sorted(found)


class _CaptureHandler(logging.Handler):
    """Every record of this process, rendered after the operator's redaction."""

    def __init__(self, scan: LeakScan) -> None:
        super().__init__(level=logging.DEBUG)
        self.scan = scan
        install_redaction(self)

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            parts = [record.getMessage(), record.exc_text or "", record.stack_info or ""]
            parts += [json.dumps(v, default=str) for k, v in vars(record).items()
                      if k not in _SKIP_ATTRS and not k.startswith("_")]
            self.scan.add_text(f"log {record.name} {record.levelname}", "\n".join(parts))


def _secret_keys(secret: dict[str, Any]) -> Iterator[str]:
    for value in (secret.get("data") or {}).values():
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            text = base64.b64decode(value).decode()
            if text.startswith("{"):
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    yield str(json.loads(text)["key"])
                continue
            yield text


def _watch_clusters(scan: LeakScan, monkeypatch: pytest.MonkeyPatch) -> None:
    from apikey_operator.testing.harness import SECRETS, LocalCluster
    from apikey_operator.testing.process import OperatorProcess

    original_stop = LocalCluster.stop

    def stop(self: LocalCluster) -> None:
        with contextlib.suppress(Exception):
            for secret in self.api.list_objects(SECRETS):
                meta = secret.get("metadata") or {}
                owned = any(r.get("kind") == "ApiKey" for r in meta.get("ownerReferences") or [])
                if owned or (meta.get("annotations") or {}).get("apikeys.dev/owner-uid"):
                    for key in _secret_keys(secret):
                        scan.add_key(key)
            scan.add_text("cluster: logs, Events, ApiKeys, policies, Secret metadata",
                          self.visible_text())
        original_stop(self)

    original_start = OperatorProcess.start

    def start(self: OperatorProcess, env: Any = None) -> OperatorProcess:
        scan.process_logs.add(self.log_path)
        return original_start(self, env)

    monkeypatch.setattr(LocalCluster, "stop", stop)
    monkeypatch.setattr(OperatorProcess, "start", start)


_SCAN: LeakScan | None = None


@pytest.fixture(scope="session", autouse=True)
def suite_leak_scan() -> Iterator[LeakScan]:
    """Records keys and visible text for the whole session; fails the run on any leak."""
    global _SCAN
    if _SCAN is not None:
        # Registered twice (a folder's conftest and the suite's plugin list): one scan.
        yield _SCAN
        return
    from prometheus_client import generate_latest

    from apikey_operator import metrics

    scan = LeakScan()
    _SCAN = scan
    handler = _CaptureHandler(scan)
    root = logging.getLogger()
    root.addHandler(handler)
    redaction.add_observer(scan.add_key)
    monkeypatch = pytest.MonkeyPatch()
    _watch_clusters(scan, monkeypatch)
    try:
        yield scan
    finally:
        monkeypatch.undo()
        redaction.remove_observer(scan.add_key)
        root.removeHandler(handler)
        _SCAN = None
    scan.add_text("metrics", generate_latest(metrics.REGISTRY).decode())
    leaks = scan.findings()
    if leaks:
        shown = "; ".join(f"{fp} in {source}" for source, fp in leaks[:20])
        pytest.fail(f"leak scan: {len(leaks)} key(s) appeared where users look: {shown}",
                    pytrace=False)

