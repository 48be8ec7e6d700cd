"""A whole local installation for tests and the sandbox: a real control plane + the operator.

`LocalCluster` takes a :class:`ControlPlane` (the process's shared one unless given), resets it
to a clean state with the namespaces asked for, puts an :class:`ApiProxy` in front of it for the
operator (request counts and faults), runs the operator against the proxy in a thread, and
offers the reads a test or a demo needs (decoded Secret data, conditions, Events) plus a wait
helper. `api` reads and writes directly as the admin, so the harness's own requests are never
counted as the operator's.
"""

from __future__ import annotations

import base64
import pathlib
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeVar

import yaml

from apikey_operator import redaction
from apikey_operator.testing.apiproxy import ApiProxy
from apikey_operator.testing.controlplane import ControlPlane, reset_cluster, shared_control_plane
from apikey_operator.testing.kube_traffic import Traffic
from apikey_operator.testing.kubeapi import KubeApi, KubernetesApiError
from apikey_operator.testing.operator import OperatorThread
from apikey_operator.usage import UsageConfig

APIKEYS = "apikeys.dev/v1alpha1/apikeys"
POLICIES = "apikeys.dev/v1alpha1/rotationpolicies"
SECRETS = "v1/secrets"
EVENTS = "v1/events"
CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"
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


class ClusterApi(KubeApi):
    """The admin client of a LocalCluster, plus the operator proxy's traffic and watch cuts."""

    def __init__(self, plane: ControlPlane, proxy: ApiProxy) -> None:
        super().__init__(plane.url, token=plane.admin_token, ca_file=plane.ca_file)
        self.plane = plane
        self.proxy = proxy

    @property
    def traffic(self) -> Traffic:
        """What the operator (and anything else using `LocalCluster.kubeconfig`) sent."""
        return self.proxy.traffic

    def cut_watches(self, resource: str | None = None) -> int:
        """End the operator's open watch streams (it re-watches); returns how many."""
        return self.proxy.cut_watches(resource)


class LocalCluster:
    def __init__(self, *, stores: Mapping[str, Mapping[str, Any]] | None = None,
                 generators: Mapping[str, Mapping[str, Any]] | None = None,
                 namespaces: Iterable[str] = ("default", "payments"),
                 workdir: str | pathlib.Path | None = None, start_operator: bool = True,
                 plane: ControlPlane | None = None, usage: UsageConfig | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="apikey-cluster-")
        self.workdir = pathlib.Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._plane = plane
        self.namespaces = (OPERATOR_NAMESPACE, *namespaces)
        self.stores = stores
        self.generators = generators
        self.usage = usage
        self.start_operator = start_operator
        self.operator: OperatorThread | None = None
        self.kubeconfig = self.workdir / "kubeconfig"
        self.recorder = KeyRecorder()
        self.proxy: ApiProxy | None = None
        self._api: ClusterApi | None = None
        self._replaced_crds: set[str] = set()

    @property
    def plane(self) -> ControlPlane:
        if self._plane is None:
            self._plane = shared_control_plane()
        return self._plane

    @property
    def api(self) -> ClusterApi:
        if self._api is None:
            raise RuntimeError("the local cluster is not started")
        return self._api

    def start(self) -> LocalCluster:
        plane = self.plane
        reset_cluster(plane.api, self.namespaces)
        self.proxy = ApiProxy(plane.url, ca_file=plane.ca_file,
                              cert_file=plane.pki["serving.crt"],
                              key_file=plane.pki["serving.key"]).start()
        self._api = ClusterApi(plane, self.proxy)
        plane.write_kubeconfig(self.kubeconfig, server=self.proxy.url)
        self.recorder.__enter__()
        if self.start_operator:
            self.start_operator_thread()
        return self

    def start_operator_thread(self) -> OperatorThread:
        self.operator = OperatorThread(str(self.kubeconfig), stores=self.stores,
                                       generators=self.generators, usage=self.usage).start()
        return self.operator

    def stop_operator_thread(self) -> None:
        if self.operator is not None:
            self.operator.stop()

    def install_crd(self, crd: Mapping[str, Any]) -> None:
        """Replace one of the project's CRDs for this test (e.g. a lenient schema); the
        project's own is put back at `stop()`, since the control plane is shared."""
        name = crd["metadata"]["name"]
        current = self.api.get_object(CRDS, None, name)
        body = dict(crd)
        if current is not None:
            body["metadata"] = {**crd["metadata"],
                                "resourceVersion": current["metadata"]["resourceVersion"]}
            self.api.replace_object(body)
        else:
            self.api.create_object(body)
        self._replaced_crds.add(name)
        self.api.wait_crd_established(name, time.monotonic() + 30)
        self._wait_schema(name, strict=False)

    def restore_crds(self) -> None:
        """Put the project's CRDs back where `install_crd` replaced them."""
        names, self._replaced_crds = self._replaced_crds, set()
        if not names:
            return
        for name in names:
            crd = self._project_crd(name)
            current = self.api.get_object(CRDS, None, name)
            if current is not None:
                crd["metadata"] = {**crd["metadata"],
                                   "resourceVersion": current["metadata"]["resourceVersion"]}
            self.api.replace_object(crd)
            self.api.wait_crd_established(name, time.monotonic() + 30)
            self._wait_schema(name, strict=True)

    @staticmethod
    def _project_crd(name: str) -> dict[str, Any]:
        for path in sorted(default_crd_dir().glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and (doc.get("metadata") or {}).get("name") == name:
                    return doc
        raise KeyError(f"no CRD {name} in {default_crd_dir()}")

    def _wait_schema(self, name: str, *, strict: bool, timeout: float = 30.0) -> None:
        """The apiserver swaps a CRD's validation a moment after the update is stored: probe
        with a dry-run create that only the project's schema refuses, until the answer
        matches."""
        if name == "apikeys.apikeys.dev":
            probe: dict[str, Any] = {
                "apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
                "metadata": {"name": "schema-probe", "namespace": OPERATOR_NAMESPACE},
                "spec": {"key": {"length": 4096}}}
            path = self.api.path(APIKEYS, OPERATOR_NAMESPACE)
        elif name == "rotationpolicies.apikeys.dev":
            probe = {"apiVersion": "apikeys.dev/v1alpha1", "kind": "RotationPolicy",
                     "metadata": {"name": "schema-probe"}, "spec": {"rotateEvery": 12345}}
            path = self.api.path(POLICIES, None)
        else:
            return

        def settled() -> bool:
            try:
                self.api.request("POST", path, probe, params={"dryRun": "All"})
            except KubernetesApiError as exc:
                return strict and exc.status == 422
            return not strict
        self.wait_for(settled, timeout, f"the {name} schema to take effect")

    def stop(self) -> None:
        self.stop_operator_thread()
        if self._api is not None:
            self.restore_crds()
        if self.proxy is not None:
            self.proxy.stop()
        if self._api is not None:
            self._api.close()
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
