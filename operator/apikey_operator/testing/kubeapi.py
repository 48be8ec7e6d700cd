"""A small synchronous Kubernetes REST client for test code (seeding, reading, waiting).

Resources are named ``"v1/secrets"`` or ``"apikeys.dev/v1alpha1/apikeys"``; objects are plain
dicts. Errors are :class:`KubernetesApiError` with the server's HTTP status, reason and message.
The operator never uses this: it has its own client in ``apikey_operator.kube``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import urllib3

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
_PATCH_ALIASES = {"merge": MERGE, "json": JSON_PATCH, "strategic": STRATEGIC, "apply": APPLY}

Body = dict[str, Any]


class KubernetesApiError(Exception):
    """An API request the server refused: its HTTP status, ``reason`` and ``message``."""

    def __init__(self, status: int, message: str, *, reason: str = "",
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if reason else f"{status}: {message}")
        self.status = status
        self.message = message
        self.reason = reason
        self.details = dict(details or {})


def split_resource(resource: str) -> tuple[str, str, str]:
    """``"v1/secrets"`` -> ``("", "v1", "secrets")``; ``"apps/v1/deployments"`` -> its parts."""
    parts = resource.strip("/").split("/")
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ValueError(f"not a resource name like 'v1/secrets': {resource!r}")


class KubeApi:
    """Admin access to one API server for tests; thread-safe (one pooled urllib3 client)."""

    def __init__(self, url: str, *, token: str | None = None,
                 ca_file: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Accept": "application/json", "User-Agent": "apikey-operator-tests"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._client = urllib3.PoolManager(
            maxsize=8, ca_certs=str(ca_file) if ca_file is not None else None,
            cert_reqs="CERT_REQUIRED", retries=False)
        self._scopes: dict[tuple[str, str, str], bool] = {}
        self._kinds: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.clear()

    # --- raw ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *,
                params: Mapping[str, str] | None = None,
                content_type: str = "application/json",
                headers: Mapping[str, str] | None = None) -> Any:
        """One request; the parsed JSON answer, or KubernetesApiError."""
        content = None
        headers = {**self._headers, **(headers or {})}
        if body is not None:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        url = self.url + path + (f"?{urlencode(params)}" if params else "")
        response = self._client.request(method, url, body=content, headers=headers,
                                        timeout=self._timeout)
        if response.status >= 400:
            raise _error_of(response.status, response.data)
        if not response.data:
            return None
        try:
            return json.loads(response.data)
        except ValueError:
            return response.data.decode(errors="replace")

    # --- discovery ---------------------------------------------------------------------------

    def _discover(self, group: str, version: str) -> None:
        path = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        listing = self.request("GET", path)
        with self._lock:
            for item in listing.get("resources", []):
                plural = str(item["name"])
                if "/" in plural:
                    continue
                self._scopes[(group, version, plural)] = bool(item.get("namespaced"))
                self._kinds[(f"{group}/{version}" if group else version, item["kind"])] = plural

    def forget_discovery(self) -> None:
        """Drop cached discovery (after a CRD changed)."""
        with self._lock:
            self._scopes.clear()
            self._kinds.clear()

    def _namespaced(self, group: str, version: str, plural: str) -> bool:
        key = (group, version, plural)
        if key not in self._scopes:
            self._discover(group, version)
        if key not in self._scopes:
            raise KeyError(f"the server does not serve {plural} in {group or 'core'}/{version}")
        return self._scopes[key]

    def resource_of(self, body: Mapping[str, Any]) -> str:
        """The resource name of an object body (from its apiVersion and kind)."""
        api_version, kind = str(body.get("apiVersion", "")), str(body.get("kind", ""))
        key = (api_version, kind)
        if key not in self._kinds:
            group, _, version = api_version.rpartition("/")
            self._discover(group, version)
        if key not in self._kinds:
            raise KeyError(f"the server serves no {kind} in {api_version}")
        return f"{api_version}/{self._kinds[key]}"

    def path(self, resource: str, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        group, version, plural = split_resource(resource)
        base = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        if self._namespaced(group, version, plural) and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{plural}"
        if name is not None:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base

    # --- objects -----------------------------------------------------------------------------

    def get_object(self, resource: str, namespace: str | None, name: str) -> Body | None:
        """The object, or None if absent."""
        try:
            found: Body = self.request("GET", self.path(resource, namespace, name))
        except KubernetesApiError as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def list_objects(self, resource: str, namespace: str | None = None, *,
                     label_selector: str | None = None,
                     field_selector: str | None = None) -> list[Body]:
        """The matching objects (all pages)."""
        params: dict[str, str] = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        items: list[Body] = []
        while True:
            page = self.request("GET", self.path(resource, namespace), params=params)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    def create_object(self, body: Mapping[str, Any], *, keep_status: bool = True) -> Body:
        """Create an object like kubectl create. With ``keep_status`` (for seeding), a given
        ``status`` is written afterwards through the status subresource, which the server
        otherwise ignores on create."""
        resource = self.resource_of(body)
        namespace = (body.get("metadata") or {}).get("namespace")
        created: Body = self.request("POST", self.path(resource, namespace), dict(body))
        status = body.get("status")
        if keep_status and status and created.get("status") != status:
            with_status = dict(created, status=status)
            try:
                created = self.request("PUT", self.path(resource, namespace,
                                                        created["metadata"]["name"], "status"),
                                       with_status)
            except KubernetesApiError as exc:
                if exc.status != 404:  # a resource without a status subresource keeps its own
                    raise
        return created

    def replace_object(self, body: Mapping[str, Any], *, subresource: str | None = None) -> Body:
        """Replace an object like a PUT (its resourceVersion, if any, is a precondition)."""
        resource = self.resource_of(body)
        meta = body.get("metadata") or {}
        replaced: Body = self.request("PUT", self.path(resource, meta.get("namespace"),
                                                       meta["name"], subresource), dict(body))
        return replaced

    def patch_object(self, resource: str, namespace: str | None, name: str, patch: Any, *,
                     patch_type: str = MERGE, subresource: str | None = None,
                     field_manager: str | None = None, force: bool = False) -> Body:
        """Patch an object; ``patch_type`` is a content type or merge/json/strategic/apply."""
        content_type = _PATCH_ALIASES.get(patch_type, patch_type)
        params = {}
        if field_manager or content_type == APPLY:
            params["fieldManager"] = field_manager or "apikey-tests"
        if force:
            params["force"] = "true"
        patched: Body = self.request("PATCH", self.path(resource, namespace, name, subresource),
                                     patch, params=params, content_type=content_type)
        return patched

    def apply(self, body: Mapping[str, Any], *, field_manager: str = "apikey-tests",
              force: bool = True) -> Body:
        """Server-side apply of a whole object."""
        meta = body.get("metadata") or {}
        return self.patch_object(self.resource_of(body), meta.get("namespace"), meta["name"],
                                 dict(body), patch_type=APPLY, field_manager=field_manager,
                                 force=force)

    def delete_object(self, resource: str, namespace: str | None, name: str, *,
                      propagation: str = "Background", missing_ok: bool = False) -> Body | None:
        """Delete an object (with finalizers it is only marked); None if absent and allowed."""
        try:
            deleted: Body = self.request("DELETE", self.path(resource, namespace, name),
                                         {"propagationPolicy": propagation})
        except KubernetesApiError as exc:
            if exc.status == 404 and missing_ok:
                return None
            raise
        return deleted

    def delete_collection(self, resource: str, namespace: str | None = None, *,
                          label_selector: str | None = None) -> None:
        params = {"labelSelector": label_selector} if label_selector else None
        self.request("DELETE", self.path(resource, namespace), params=params)

    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> Body:
        """Create the Namespace if absent; its labels become exactly `labels` when given
        (the ``kubernetes.io/metadata.name`` label the server adds stays)."""
        existing = self.get_object("v1/namespaces", None, name)
        if existing is None:
            try:
                existing = self.create_object({"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": name,
                                                            "labels": dict(labels or {})}})
            except KubernetesApiError as exc:
                if exc.status != 409:
                    raise
                existing = self.get_object("v1/namespaces", None, name) or {}
            if not labels:
                return existing
        if labels is None:
            return existing
        current = dict((existing.get("metadata") or {}).get("labels") or {})
        wanted: dict[str, Any] = {k: None for k in current
                                  if k != "kubernetes.io/metadata.name" and k not in labels}
        wanted.update(labels)
        return self.patch_object("v1/namespaces", None, name, {"metadata": {"labels": wanted}})

    def watch(self, resource: str, namespace: str | None = None, *,
              resource_version: str | None = None, timeout: float = 30.0,
              on_open: Callable[[], object] | None = None) -> Iterator[Body]:
        """Watch events (dicts with ``type`` and ``object``) until the server ends the stream;
        `on_open` is called once the server has accepted the watch."""
        params = {"watch": "true", "timeoutSeconds": str(int(timeout)),
                  "allowWatchBookmarks": "true"}
        if resource_version:
            params["resourceVersion"] = resource_version
        url = f"{self.url}{self.path(resource, namespace)}?{urlencode(params)}"
        response = self._client.request("GET", url, headers=self._headers,
                                        preload_content=False, timeout=timeout + 5)
        try:
            if response.status >= 400:
                raise _error_of(response.status, response.read())
            if on_open is not None:
                on_open()
            buffer = b""
            for chunk in response.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()

    # --- waiting -----------------------------------------------------------------------------

    def wait_crd_established(self, name: str, deadline: float) -> Body:
        """Wait until the CRD is Established and its resources are in discovery."""
        while True:
            crd = self.get_object("apiextensions.k8s.io/v1/customresourcedefinitions", None, name)
            conditions = ((crd or {}).get("status") or {}).get("conditions") or []
            if crd and any(c.get("type") == "Established" and c.get("status") == "True"
                           for c in conditions):
                spec = crd["spec"]
                version = next(v["name"] for v in spec["versions"] if v.get("served", True))
                try:
                    self.forget_discovery()
                    self._namespaced(spec["group"], version, spec["names"]["plural"])
                    return crd
                except (KeyError, KubernetesApiError):
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} was not Established in time: {conditions}")
            time.sleep(0.1)


def _error_of(code: int, data: bytes) -> KubernetesApiError:
    try:
        status = json.loads(data)
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        return KubernetesApiError(code, str(status.get("message", "")),
                                  reason=str(status.get("reason", "")),
                                  details=status.get("details") or {})
    return KubernetesApiError(code, data[:500].decode(errors="replace"))
