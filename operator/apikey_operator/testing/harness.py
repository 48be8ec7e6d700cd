"""A whole local installation for tests and the sandbox: emulated API + the real operator.

`LocalCluster` starts the emulated API server with the project's CRDs, runs the
operator against it in a thread, and offers the reads a test or a demo needs
(decoded Secret data, conditions, Events) plus a wait helper.
"""

from __future__ import annotations

import base64
import pathlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

from apikey_operator import redaction
from apikey_operator.testing.kube_runner import EmulatorRunner
from apikey_operator.testing.operator import OperatorThread

APIKEYS = "apikeys.dev/v1alpha1/apikeys"
POLICIES = "apikeys.dev/v1alpha1/rotationpolicies"
SECRETS = "v1/secrets"
EVENTS = "v1/events"
OPERATOR_NAMESPACE = "apikey-operator"
T = TypeVar("T")


def default_crd_dir() -> pathlib.Path:
    """The project's crds/ folder (the harness runs from a source checkout)."""
    here = pathlib.Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "crds").is_dir() and (parent / "pyproject.toml").exists():
            return parent / "crds"
    raise FileNotFoundError("cannot find the project's crds/ folder")


class KeyRecorder:
    """Every key the operator generated or read while installed (for leak scans)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> None:
        with self._lock:
            self.keys.add(key)

    def __enter__(self) -> KeyRecorder:
        redaction.add_observer(self)
        return self

    def __exit__(self, *exc: object) -> None:
        redaction.remove_observer(self)

    def leaks_in(self, text: str) -> list[str]:
        """Each recorded key found in `text`: its fingerprint and what preceded it (the key
        itself masked), so a failing scan says where the leak is without repeating it."""
        from apikey_operator.keys import fingerprint

        with self._lock:
            found = [k for k in self.keys if k and k in text]
        report = []
        for key in sorted(found):
            at = text.index(key)
            report.append(f"{fingerprint(key)} after {text[max(0, at - 120):at]!r}")
        return report


class LocalCluster:
    def __init__(self, *, stores: Mapping[str, Mapping[str, Any]] | None = None,
                 generators: Mapping[str, Mapping[str, Any]] | None = None,
                 namespaces: Iterable[str] = ("default", "payments"),
                 workdir: str | pathlib.Path | None = None, start_operator: bool = True) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="apikey-cluster-")
        self.workdir = pathlib.Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api = EmulatorRunner(crd_paths=[default_crd_dir()],
                                  namespaces=(OPERATOR_NAMESPACE, *namespaces))
        self.stores = stores
        self.generators = generators
        self.start_operator = start_operator
        self.operator: OperatorThread | None = None
        self.kubeconfig = self.workdir / "kubeconfig"
        self.recorder = KeyRecorder()

    def start(self) -> LocalCluster:
        self.api.start()
        self.api.write_kubeconfig(self.kubeconfig)
        self.recorder.__enter__()
        if self.start_operator:
            self.start_operator_thread()
        return self

    def start_operator_thread(self) -> OperatorThread:
        self.operator = OperatorThread(str(self.kubeconfig), stores=self.stores,
                                       generators=self.generators).start()
        return self.operator

    def stop_operator_thread(self) -> None:
        if self.operator is not None:
            self.operator.stop()

    def stop(self) -> None:
        self.stop_operator_thread()
        self.api.stop()
        self.recorder.__exit__()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- objects -------------------------------------------------------------------------------

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.api.create_object(body, keep_status=False)

    def apikey(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api.get_object(APIKEYS, namespace, name)

    def annotate(self, namespace: str, name: str, annotations: Mapping[str, str | None]) -> None:
        self.api.patch_object(APIKEYS, namespace, name,
                              {"metadata": {"annotations": dict(annotations)}})

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.api.get_object(SECRETS, namespace, name)

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        secret = self.secret(namespace, name) or {}
        return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}

    def events(self, namespace: str, name: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.api.list_objects(EVENTS, namespace)
                if name is None or (e.get("involvedObject") or {}).get("name") == name]

    def event_reasons(self, namespace: str, name: str) -> list[str]:
        return [str(e.get("reason")) for e in self.events(namespace, name)]

    def condition(self, namespace: str, name: str, type_: str = "Ready") -> dict[str, Any]:
        body = self.apikey(namespace, name) or {}
        for cond in (body.get("status") or {}).get("conditions") or []:
            if cond.get("type") == type_:
                return dict(cond)
        return {}

    def wait_for(self, predicate: Callable[[], T | Literal[False] | None],
                 timeout: float = 20.0, what: str = "condition") -> T:
        """Poll `predicate` until it returns something truthy; raise with `what` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    def wait_ready(self, namespace: str, name: str, timeout: float = 20.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            body = self.apikey(namespace, name)
            if not body:
                return None
            conditions = (body.get("status") or {}).get("conditions") or []
            cond: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
            if cond.get("status") == "True" and cond.get("observedGeneration") == \
                    body["metadata"].get("generation"):
                return body
            return None
        return self.wait_for(ready, timeout, f"ApiKey {namespace}/{name} to be Ready")

    def wait_reason(self, namespace: str, name: str, reason: str,
                    timeout: float = 20.0, type_: str = "Ready") -> dict[str, Any]:
        def matching() -> dict[str, Any] | None:
            cond = self.condition(namespace, name, type_)
            return cond if cond.get("reason") == reason else None
        return self.wait_for(matching, timeout, f"{type_} reason {reason} on {namespace}/{name}")

    # --- leak scan -----------------------------------------------------------------------------

    def visible_text(self) -> str:
        """Everything users and log pipelines see: logs, Events, every ApiKey (status,
        annotations, labels), every object's metadata; never the data of Secrets."""
        parts = [self.operator.logs.text() if self.operator else ""]
        for resource in (APIKEYS, POLICIES, EVENTS):
            parts.append(repr(self.api.list_objects(resource)))
        for secret in self.api.list_objects(SECRETS):
            parts.append(repr(secret.get("metadata")))
        return "\n".join(parts)

    def leaks(self) -> list[str]:
        return self.recorder.leaks_in(self.visible_text())
