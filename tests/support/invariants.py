"""Check the contract's invariant at every observed instant, from one ordered watch stream.

Both the consumer Secrets and the built-in store's Secrets are `secrets`, so one
all-namespaces watch sees every write to either in resourceVersion order. After
each event the watcher checks: every key a consumer Secret holds is a version the
store holds as valid (current, previous or pending).
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Mapping
from typing import Any

from apikey_operator.testing.kubeapi import KubeApi, KubernetesApiError

STORE_NAMESPACE = "apikey-operator"


def _decoded(secret: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in (secret.get("data") or {}).items():
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            out[key] = base64.b64decode(value).decode()
    return out


def store_valid_keys(store_secret: Mapping[str, Any]) -> set[str]:
    data = _decoded(store_secret)
    annotations = (store_secret.get("metadata") or {}).get("annotations") or {}
    book = json.loads(annotations.get("apikeys.dev/store-state") or "{}")
    valid = set()
    for pointer in ("current", "previous", "pending"):
        version = book.get(pointer)
        if version is not None and f"v{version}" in data:
            valid.add(json.loads(data[f"v{version}"])["key"])
    return valid


class SecretTimeline:
    """Watches every Secret write and records invariant violations (as descriptions)."""

    def __init__(self, api: KubeApi) -> None:
        self.api = api
        self.consumers: dict[tuple[str, str], dict[str, Any]] = {}
        self.stores: dict[str, dict[str, Any]] = {}
        self.violations: list[str] = []
        self.events_seen = 0
        self.last_rv = ""
        self.consumer_versions_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="secret-timeline")
        self._started = threading.Event()

    def start(self) -> SecretTimeline:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            # Resume where the previous stream ended so no write goes unseen; the first
            # stream (no resourceVersion) starts with every existing Secret as ADDED.
            stream = self.api.watch("v1/secrets", resource_version=self.last_rv or None,
                                    timeout=2, on_open=self._started.set)
            with contextlib.suppress(KubernetesApiError, OSError, ValueError):
                for event in stream:
                    if event.get("type") == "ERROR":  # e.g. 410 Gone: start over
                        self.last_rv = ""
                        break
                    if event.get("type") == "BOOKMARK":
                        rv = ((event.get("object") or {}).get("metadata") or {}).get(
                            "resourceVersion")
                        self.last_rv = str(rv or self.last_rv)
                        continue
                    self._on_event(event)
                    if self._stop.is_set():
                        return

    def _on_event(self, event: Mapping[str, Any]) -> None:
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        kind = event.get("type")
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        self.events_seen += 1
        self.last_rv = str(meta.get("resourceVersion") or self.last_rv)
        if meta.get("namespace") == STORE_NAMESPACE:
            owner = (meta.get("annotations") or {}).get("apikeys.dev/owner-uid")
            if owner:
                if kind == "DELETED":
                    self.stores.pop(owner, None)
                else:
                    self.stores[owner] = dict(obj)
        else:
            refs = [r for r in meta.get("ownerReferences") or [] if r.get("kind") == "ApiKey"]
            if not refs:
                return
            key = (str(meta.get("namespace")), str(meta.get("name")))
            if kind == "DELETED":
                self.consumers.pop(key, None)
            else:
                self.consumers[key] = dict(obj)
                self.consumer_versions_seen += 1
        self._check()

    def _check(self) -> None:
        for (namespace, name), secret in self.consumers.items():
            refs = [r for r in secret["metadata"].get("ownerReferences") or []
                    if r.get("kind") == "ApiKey"]
            store = self.stores.get(str(refs[0].get("uid"))) if refs else None
            valid = store_valid_keys(store) if store else set()
            for data_key, value in _decoded(secret).items():
                if value not in valid:
                    rv = secret["metadata"].get("resourceVersion")
                    self.violations.append(
                        f"Secret {namespace}/{name} rv {rv} holds {data_key!r}, a key the "
                        "store does not hold as valid")
