"""An in-memory Kubernetes API server for tests, built on ``kmock``'s ``KubernetesEmulator``.

It keeps objects the way the real API server does, as far as kopf, lightkube and kubectl
notice: ``uid``/``resourceVersion``/``generation``/``creationTimestamp``, ``generateName``,
optimistic concurrency (409 on a stale ``resourceVersion``), the ``status`` subresource kept
apart from the main object, PUT, merge / JSON / strategic-merge / apply patches, label and field
selectors, list ``kind`` and paging, watches that resume from a ``resourceVersion``, finalizers
and ``deletionTimestamp``, owner-reference garbage collection, namespaces as objects (and
their termination), ``stringData`` for Secrets, CRD schema defaulting, pruning and validation
(422 ``Invalid`` naming the field), discovery, ``/openapi/v3`` and server-side tables for
``kubectl get``.

Requests are counted by verb and resource, and faults (delays, error statuses) can be
injected per verb/resource through :attr:`ApiServerEmulator.traffic`.

Served Kubernetes paths bypass kmock's request history and reaction DSL entirely (kmock walks
its whole history for every request); any other path still goes to kmock's DSL, so
``emulator['get /custom'] << {...}`` keeps working.

All state lives on the event loop that serves the emulator; the synchronous object methods
(``create_object`` and friends) must run on that loop's thread. From other threads, use
:class:`apikey_operator.testing.kube_runner.EmulatorRunner`, which marshals the calls.

``emulator.objects`` is kmock's view of the stored objects and their recent versions, for
assertions only: its versions share structure with the live store, so write through the
object methods (or the API), never into the view.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import copy
import datetime
import json
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
import yarl
from kmock._internal import k8s_views

from apikey_operator.testing import (
    kube_patches,
    kube_protobuf,
    kube_resources,
    kube_schema,
    kube_selectors,
)
from apikey_operator.testing.kube_resources import ResourceKey, ResourceType
from apikey_operator.testing.kube_traffic import RequestRecord, Traffic, reason_for

logger = logging.getLogger(__name__)

Body = dict[str, Any]
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the API server's, without vowels
_JSON = "application/json"
_CRDS: ResourceKey = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


class KubernetesApiError(Exception):
    """An API failure, rendered as a ``Status`` object with the given HTTP status."""

    def __init__(self, status: int, message: str, *, reason: str | None = None,
                 details: Mapping[str, Any] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason or reason_for(status)
        self.details = dict(details or {})
        self.retry_after = retry_after

    def as_status(self) -> Body:
        """The ``v1 Status`` body the API server would send."""
        details = dict(self.details)
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        status: Body = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "message": self.message, "reason": self.reason,
                        "code": self.status}
        if details:
            status["details"] = details
        return status


def _not_found(rt: ResourceType, name: str) -> KubernetesApiError:
    return KubernetesApiError(404, f'{rt.qualified} "{name}" not found', reason="NotFound",
                              details={"name": name, "group": rt.group, "kind": rt.plural})


def _conflict(rt: ResourceType, name: str) -> KubernetesApiError:
    return KubernetesApiError(
        409, f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        reason="Conflict", details={"name": name, "group": rt.group, "kind": rt.plural})


def _invalid(rt: ResourceType, name: str, errors: Sequence[kube_schema.FieldError]
             ) -> KubernetesApiError:
    shown = [e.message for e in errors]
    listed = shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"
    kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    return KubernetesApiError(
        422, f'{kind} "{name}" is invalid: {listed}', reason="Invalid",
        details={"name": name, "group": rt.group, "kind": rt.kind,
                 "causes": [{"reason": e.reason, "message": e.detail, "field": e.field}
                            for e in errors]})


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _content_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Everything whose change bumps ``metadata.generation``: not metadata, not status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _without_rv(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in _meta(obj).items() if k not in ("resourceVersion", "managedFields")}
    return {**obj, "metadata": meta}


@attrs.frozen(eq=False, order=False)
class _ObjectsArray(k8s_views.ObjectsArray):
    """kmock's object view, where ``(resource, ns, name) in objects`` parses string resources.

    Membership means "exists and is not deleted".
    """

    def __contains__(self, key: object, /) -> bool:
        if not isinstance(key, tuple) or len(key) != 3:
            return False
        try:
            return not self[key].deleted
        except (KeyError, TypeError):
            return False


@dataclass(eq=False)
class _Watcher:
    namespace: str | None
    name: str | None
    labels: kube_selectors.Matcher | None
    fields: kube_selectors.Matcher | None
    queue: asyncio.Queue[Body | None]

    def wants(self, obj: Mapping[str, Any] | None) -> bool:
        if obj is None:
            return False
        meta = _meta(obj)
        return ((self.namespace is None or meta.get("namespace") == self.namespace)
                and (self.name is None or meta.get("name") == self.name)
                and (self.labels is None or self.labels(obj))
                and (self.fields is None or self.fields(obj)))


@dataclass(frozen=True)
class _Route:
    kind: str  # "resource", "discovery" or "other"
    rt: ResourceType | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    group: str | None = None
    version: str | None = None
    plural: str | None = None


@dataclass(frozen=True)
class _BacklogEntry:
    rv: int
    type: str
    obj: Body
    old: Body | None


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """The emulated API server; serve it with :func:`serve` or ``EmulatorRunner``.

    ``crd_paths`` are CRD YAML files or folders installed at construction;
    ``strict_namespaces`` makes namespaced writes require an existing Namespace (as a real
    cluster does); ``history_limit`` bounds the versions kept per object in ``objects``;
    ``watch_backlog`` bounds the events kept per resource for resuming watches (older
    resourceVersions get 410 Gone).
    """

    crd_paths: Sequence[str] = ()
    strict_namespaces: bool = True
    history_limit: int = 8
    watch_backlog: int = 50_000
    traffic: Traffic = attrs.field(factory=Traffic)

    _objects: k8s_views.ObjectsArray = attrs.field(factory=_ObjectsArray, init=False)
    _types: dict[ResourceKey, ResourceType] = attrs.field(factory=dict, init=False)
    _store: dict[ResourceKey, dict[tuple[str | None, str], Body]] = attrs.field(
        factory=dict, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _uids: dict[str, tuple[ResourceKey, str | None, str]] = attrs.field(factory=dict, init=False)
    _dependents: dict[str, set[tuple[ResourceKey, str | None, str]]] = attrs.field(
        factory=lambda: collections.defaultdict(set), init=False)
    _ns_counts: collections.Counter[str] = attrs.field(factory=collections.Counter, init=False)
    _terminating: set[str] = attrs.field(factory=set, init=False)
    _watchers: dict[ResourceKey, set[_Watcher]] = attrs.field(
        factory=lambda: collections.defaultdict(set), init=False)
    _backlog: dict[ResourceKey, collections.deque[_BacklogEntry]] = attrs.field(
        factory=dict, init=False)
    _backlog_floor: dict[ResourceKey, int] = attrs.field(factory=dict, init=False)
    _kmock_resources: dict[ResourceKey, kmock.resource] = attrs.field(factory=dict, init=False)
    _base_url: str | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for rt in kube_resources.builtin_resources():
            self.register_resource(rt)
        for doc in kube_resources.load_crd_documents(self.crd_paths):
            self.install_crd(doc)

    # --- resource types ------------------------------------------------------------------------

    def register_resource(self, rt: ResourceType) -> None:
        """Serve a resource type (replacing one with the same group/version/plural)."""
        self._types[rt.key] = rt
        self._store.setdefault(rt.key, {})
        self.resources[f"{rt.group}/{rt.version}/{rt.plural}" if rt.group
                       else f"{rt.version}/{rt.plural}"] = kmock.ResourceInfo(
            namespaced=rt.namespaced, kind=rt.kind, singular=rt.singular, verbs=set(rt.verbs),
            shortnames=set(rt.short_names), categories=set(rt.categories),
            subresources=set(rt.subresources))

    def install_crd(self, crd: Mapping[str, Any]) -> list[ResourceType]:
        """Serve the versions of a CustomResourceDefinition and store the CRD object itself."""
        types = kube_resources.resources_from_crd(crd)
        for rt in types:
            self.register_resource(rt)
        crd_rt = self._types[_CRDS]
        name = _meta(crd).get("name", "")
        if (None, name) not in self._store[crd_rt.key]:
            body = copy.deepcopy(dict(crd))
            body["status"] = {"conditions": [
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted",
                 "lastTransitionTime": _now()}],
                "acceptedNames": body["spec"]["names"], "storedVersions": [
                    v["name"] for v in body["spec"].get("versions", []) if v.get("storage")]}
            self._create(crd_rt, None, body, keep_status=True, install=False)
        return types

    @property
    def resource_types(self) -> list[ResourceType]:
        """Every served resource type."""
        return list(self._types.values())

    def resource_type(self, ref: str | ResourceType) -> ResourceType:
        """Resolve ``'v1/secrets'``, ``'apikeys.dev/v1alpha1/apikeys'``, ``'apikeys'``, ``'ak'``,
        ``'ApiKey'`` or ``'apikeys.apikeys.dev'`` to a served resource type (KeyError if none)."""
        if isinstance(ref, ResourceType):
            return ref
        parts = ref.split("/")
        if len(parts) == 2 and parts[0] == "v1":
            return self._types[("", "v1", parts[1])]
        if len(parts) == 3:
            return self._types[(parts[0], parts[1], parts[2])]
        candidates = [rt for rt in self._types.values()
                      if ref in (rt.plural, rt.singular, rt.kind, rt.qualified, *rt.short_names)]
        if not candidates:
            raise KeyError(f"unknown resource: {ref!r}")
        # Prefer the core group, then custom resources (kubectl's order is similar).
        candidates.sort(key=lambda rt: (rt.group != "", not rt.custom))
        return candidates[0]

    def _for_body(self, body: Mapping[str, Any]) -> ResourceType:
        api_version, kind = body.get("apiVersion", ""), body.get("kind", "")
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        raise KeyError(f"no served resource for {api_version} {kind}")

    # --- thread-affine object API (run on the serving loop's thread) ---------------------------

    def get_object(self, resource: str | ResourceType, namespace: str | None,
                   name: str) -> Body | None:
        """A deep copy of the stored object, or None."""
        rt = self.resource_type(resource)
        obj = self._store[rt.key].get((namespace if rt.namespaced else None, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list_objects(self, resource: str | ResourceType, namespace: str | None = None, *,
                     label_selector: str | None = None,
                     field_selector: str | None = None) -> list[Body]:
        """Deep copies of the matching objects, ordered by namespace and name."""
        rt = self.resource_type(resource)
        return copy.deepcopy(self._select(rt, namespace, label_selector, field_selector))

    def create_object(self, body: Mapping[str, Any], *, namespace: str | None = None,
                      keep_status: bool = True) -> Body:
        """Create an object as a POST would (validation, defaults, events, watch notifications).

        ``keep_status`` keeps a given ``status`` (a POST drops it for status subresources).
        Raises :class:`KubernetesApiError` like the API would answer.
        """
        rt = self._for_body(body)
        ns = (namespace or _meta(body).get("namespace")) if rt.namespaced else None
        return copy.deepcopy(self._create(rt, ns, copy.deepcopy(dict(body)),
                                          keep_status=keep_status))

    def patch_object(self, resource: str | ResourceType, namespace: str | None, name: str,
                     patch: Any, *, patch_type: str = kube_patches.MERGE,
                     subresource: str | None = None) -> Body:
        """Patch an object as a PATCH request would; ``patch_type`` is a patch content type."""
        rt = self.resource_type(resource)
        return copy.deepcopy(self._patch(rt, namespace if rt.namespaced else None, name,
                                         patch_type, patch, subresource))

    def replace_object(self, body: Mapping[str, Any], *, subresource: str | None = None) -> Body:
        """Replace an object as a PUT would (checks ``resourceVersion`` when given)."""
        rt = self._for_body(body)
        meta = _meta(body)
        return copy.deepcopy(self._update(rt, meta.get("namespace") if rt.namespaced else None,
                                          meta.get("name", ""), copy.deepcopy(dict(body)),
                                          subresource))

    def delete_object(self, resource: str | ResourceType, namespace: str | None, name: str, *,
                      propagation: str = "Background") -> Body:
        """Delete as a DELETE would: objects with finalizers only get a ``deletionTimestamp``."""
        rt = self.resource_type(resource)
        return copy.deepcopy(self._delete(rt, namespace if rt.namespaced else None, name,
                                          propagation=propagation))

    def ensure_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> Body:
        """Create the Namespace if absent (labels are applied either way); returns it."""
        ns_rt = self._types[("", "v1", "namespaces")]
        existing = self._store[ns_rt.key].get((None, name))
        if existing is None:
            return copy.deepcopy(self._create(ns_rt, None, {
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": dict(labels or {})}}))
        if labels:
            return self.patch_object(ns_rt, None, name, {"metadata": {"labels": dict(labels)}})
        return copy.deepcopy(existing)

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out."""
        return self._rv

    # --- storage internals ---------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _kres(self, rt: ResourceType) -> kmock.resource:
        found = self._kmock_resources.get(rt.key)
        if found is None:
            found = self._kmock_resources[rt.key] = kmock.resource(rt.group, rt.version,
                                                                   rt.plural)
        return found

    def _select(self, rt: ResourceType, namespace: str | None, label_selector: str | None,
                field_selector: str | None) -> list[Body]:
        try:
            labels = kube_selectors.label_matcher(label_selector)
            fields = kube_selectors.field_matcher(field_selector)
        except kube_selectors.SelectorError as exc:
            raise KubernetesApiError(400, str(exc), reason="BadRequest") from exc
        store = self._store[rt.key]
        if namespace is not None:
            keys = sorted(k for k in store if k[0] == namespace)
        else:
            keys = sorted(store, key=lambda k: (k[0] or "", k[1]))
        result = []
        for key in keys:
            obj = store[key]
            if (labels is None or labels(obj)) and (fields is None or fields(obj)):
                result.append(obj)
        return result

    def _put(self, rt: ResourceType, obj: Body, old: Body | None) -> None:
        """Store a new version, keep the indexes, mirror into kmock's view, notify watchers."""
        meta = obj["metadata"]
        ns, name = meta.get("namespace"), meta["name"]
        self._store[rt.key][(ns, name)] = obj
        uid = meta["uid"]
        key = (rt.key, ns, name)
        if old is None:
            self._uids[uid] = key
            if ns is not None:
                self._ns_counts[ns] += 1
        self._reindex_owners(key, old, obj)
        kkey = (self._kres(rt), ns, name)
        if old is None or kkey not in self._objects:
            if kkey in self._objects:
                self._objects[kkey].create(obj)
            else:
                self._objects[kkey] = obj
        else:
            history = self._objects[kkey].history
            history.append(obj)
            if len(history) > self.history_limit:
                del history[: len(history) - self.history_limit]
        self._publish(rt, "ADDED" if old is None else "MODIFIED", obj, old)

    def _reindex_owners(self, key: tuple[ResourceKey, str | None, str], old: Body | None,
                        new: Body | None) -> None:
        for body, add in ((old, False), (new, True)):
            if body is None:
                continue
            for ref in _meta(body).get("ownerReferences") or []:
                owner_uid = ref.get("uid") if isinstance(ref, dict) else None
                if not owner_uid:
                    continue
                if add:
                    self._dependents[owner_uid].add(key)
                else:
                    self._dependents.get(owner_uid, set()).discard(key)

    def _publish(self, rt: ResourceType, etype: str, obj: Body, old: Body | None) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        backlog = self._backlog.get(rt.key)
        if backlog is None:
            backlog = self._backlog[rt.key] = collections.deque(maxlen=self.watch_backlog)
        if len(backlog) == backlog.maxlen:
            self._backlog_floor[rt.key] = backlog[0].rv
        entry = _BacklogEntry(rv, etype, obj, old)
        backlog.append(entry)
        for watcher in self._watchers.get(rt.key, ()):
            event = self._event_for(watcher, entry)
            if event is not None:
                watcher.queue.put_nowait(event)

    @staticmethod
    def _event_for(watcher: _Watcher, entry: _BacklogEntry) -> Body | None:
        new_ok = watcher.wants(entry.obj)
        old_ok = watcher.wants(entry.old)
        if entry.type == "DELETED":
            return {"type": "DELETED", "object": entry.obj} if new_ok or old_ok else None
        if new_ok:
            etype = "MODIFIED" if entry.type == "MODIFIED" and old_ok else "ADDED"
            return {"type": etype, "object": entry.obj}
        if old_ok:  # left the selection: a watcher sees it as gone
            return {"type": "DELETED", "object": entry.obj}
        return None

    def _check_namespace(self, rt: ResourceType, namespace: str | None) -> None:
        if not rt.namespaced:
            return
        if not namespace:
            raise KubernetesApiError(400, "the namespace of the object is required",
                                     reason="BadRequest")
        if namespace in self._terminating:
            raise KubernetesApiError(
                403, f"{rt.plural} is forbidden: unable to create new content in namespace "
                f"{namespace} because it is being terminated", reason="Forbidden")
        if self.strict_namespaces and (None, namespace) not in self._store[("", "v1",
                                                                            "namespaces")]:
            raise KubernetesApiError(404, f'namespaces "{namespace}" not found',
                                     reason="NotFound",
                                     details={"name": namespace, "kind": "namespaces"})

    def _normalise(self, rt: ResourceType, name: str, obj: Body,
                   subresource: str | None = None, *, strict: bool = False) -> None:
        """Secret stringData, metadata checks and CRD schema handling; raises 400/422."""
        errors: list[kube_schema.FieldError] = []
        meta = obj["metadata"]
        for field in ("labels", "annotations"):
            values = meta.get(field)
            if values is None:
                continue
            if not isinstance(values, dict):
                errors.append(kube_schema.FieldError(f"metadata.{field}", "FieldValueInvalid",
                                                     "Invalid value: must be a map"))
                continue
            for label, value in values.items():
                if not isinstance(value, str):
                    raise KubernetesApiError(
                        400, f"json: cannot unmarshal {type(value).__name__} into Go struct "
                        f"field ObjectMeta.metadata.{field} of type string", reason="BadRequest")
                if field == "labels" and (len(value) > 63 or not _LABEL_VALUE_RE.match(value)):
                    errors.append(kube_schema.FieldError(
                        f"metadata.labels.{label}", "FieldValueInvalid",
                        f'Invalid value: "{value}": a valid label must be an empty string or '
                        "consist of alphanumeric characters, '-', '_' or '.', and must start "
                        "and end with an alphanumeric character"))
        if rt.key == ("", "v1", "secrets"):
            string_data = obj.pop("stringData", None)
            if string_data:
                data = dict(obj.get("data") or {})
                for key, value in string_data.items():
                    data[key] = base64.b64encode(str(value).encode("utf-8")).decode("ascii")
                obj["data"] = data
            for key, value in (obj.get("data") or {}).items():
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, TypeError, ValueError) as exc:
                    raise KubernetesApiError(400, f"illegal base64 data in data[{key}]",
                                             reason="BadRequest") from exc
            obj.setdefault("type", "Opaque")
        if rt.schema is not None:
            status_schema = (rt.schema.get("properties") or {}).get("status")
            if subresource == "status" and isinstance(status_schema, Mapping):
                # Only the status changed: like the server's validation ratcheting, unchanged
                # fields are not judged again (and the status path is the hot one).
                if isinstance(obj.get("status"), dict):
                    if strict:
                        self._refuse_unknown(rt, kube_schema.unknown_fields(
                            status_schema, obj["status"], "status"))
                    kube_schema.prune(status_schema, obj["status"])
                    kube_schema.apply_defaults(status_schema, obj["status"])
                errors.extend(kube_schema.validate(status_schema, obj.get("status"), "status")
                              if "status" in obj else [])
            else:
                if strict:
                    self._refuse_unknown(rt, kube_schema.unknown_fields(rt.schema, obj,
                                                                        root=True))
                kube_schema.prune(rt.schema, obj, root=True)
                kube_schema.apply_defaults(rt.schema, obj)
                errors.extend(kube_schema.validate(rt.schema, obj))
        if errors:
            raise _invalid(rt, name, errors)

    @staticmethod
    def _refuse_unknown(rt: ResourceType, unknown: Sequence[str]) -> None:
        if unknown:
            shown = ", ".join(f'unknown field "{path}"' for path in unknown)
            raise KubernetesApiError(
                400, f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {shown}", reason="BadRequest")

    def _create(self, rt: ResourceType, namespace: str | None, body: Body, *,
                keep_status: bool = False, dry_run: bool = False, install: bool = True,
                strict: bool = False) -> Body:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise KubernetesApiError(400, "the body of the request is not an object",
                                     reason="BadRequest")
        meta = body.setdefault("metadata", {})
        if body.get("kind") not in (None, rt.kind) or body.get("apiVersion") not in (
                None, rt.api_version):
            raise KubernetesApiError(
                400, f"the API version in the data ({body.get('apiVersion')}) does not match "
                f"the expected API version ({rt.api_version})", reason="BadRequest")
        body["apiVersion"], body["kind"] = rt.api_version, rt.kind
        if rt.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise KubernetesApiError(
                    400, "the namespace of the provided object does not match the namespace "
                    "sent on the request", reason="BadRequest")
            namespace = namespace or meta.get("namespace")
            self._check_namespace(rt, namespace)
            meta["namespace"] = namespace
        else:
            namespace = None
            meta.pop("namespace", None)
        store = self._store[rt.key]
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise _invalid(rt, "", [kube_schema.FieldError(
                    "metadata.name", "FieldValueRequired",
                    "Required value: name or generateName is required")])
            while True:
                name = prefix + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
                if (namespace, name) not in store:
                    break
            meta["name"] = name
        pattern = _LABEL_NAME_RE if rt.key == ("", "v1", "namespaces") else _NAME_RE
        if not isinstance(name, str) or len(name) > 253 or not pattern.match(name):
            raise _invalid(rt, str(name), [kube_schema.FieldError(
                "metadata.name", "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character")])
        if (namespace, name) in store:
            raise KubernetesApiError(409, f'{rt.qualified} "{name}" already exists',
                                     reason="AlreadyExists",
                                     details={"name": name, "group": rt.group,
                                              "kind": rt.plural})
        if rt.status_subresource and not keep_status:
            body.pop("status", None)
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        if rt.tracks_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        if rt.key == ("", "v1", "namespaces"):
            body.setdefault("spec", {"finalizers": ["kubernetes"]})
            body["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        self._normalise(rt, name, body, strict=strict)
        meta["resourceVersion"] = self._next_rv() if not dry_run else str(self._rv)
        if dry_run:
            return body
        self._put(rt, body, None)
        if install and rt.key == _CRDS:
            for crd_rt in kube_resources.resources_from_crd(body):
                self.register_resource(crd_rt)
        return body

    def _existing(self, rt: ResourceType, namespace: str | None, name: str) -> Body:
        obj = self._store[rt.key].get((namespace, name))
        if obj is None:
            raise _not_found(rt, name)
        return obj

    def _commit(self, rt: ResourceType, old: Body, new: Body, subresource: str | None, *,
                dry_run: bool = False, strict: bool = False) -> Body:
        """Turn a client's full new body into the stored next version (or keep the old one)."""
        old_meta = old["metadata"]
        name = old_meta["name"]
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise KubernetesApiError(400, "the body of the request is not an object",
                                     reason="BadRequest")
        client_rv = _meta(new).get("resourceVersion")
        if client_rv not in (None, "") and client_rv != old_meta["resourceVersion"]:
            raise _conflict(rt, name)
        if subresource == "status":
            if not rt.status_subresource:
                raise _not_found(rt, name)
            status = new.get("status")
            new = {k: v for k, v in old.items() if k != "status"}
            new["metadata"] = dict(old_meta)
            if status is not None:
                new["status"] = status
        elif subresource is not None:
            if subresource not in rt.subresources:
                raise _not_found(rt, name)
        else:
            new = dict(new)
            if rt.status_subresource:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
        meta = dict(new.get("metadata") or {})
        new["metadata"] = meta
        if meta.get("name", name) != name or (
                rt.namespaced and meta.get("namespace", old_meta.get("namespace"))
                != old_meta.get("namespace")):
            raise KubernetesApiError(400, "the name or namespace of the object does not match "
                                     "the request", reason="BadRequest")
        for field in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise _invalid(rt, name, [kube_schema.FieldError(
                    "metadata.finalizers", "FieldValueForbidden",
                    "Forbidden: no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {sorted(added)}")])
        if not meta.get("finalizers"):
            meta.pop("finalizers", None)
        self._normalise(rt, name, new, subresource, strict=strict)
        if _without_rv(new) == _without_rv(old):
            return old  # a no-op write: the real server neither bumps the version nor notifies
        if rt.tracks_generation and _content_part(new) != _content_part(old):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        if dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        self._put(rt, new, old)
        if rt.key == _CRDS:
            for crd_rt in kube_resources.resources_from_crd(new):
                self.register_resource(crd_rt)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(rt, meta.get("namespace"), name)
        return new

    def _update(self, rt: ResourceType, namespace: str | None, name: str, body: Body,
                subresource: str | None, *, dry_run: bool = False,
                strict: bool = False) -> Body:
        old = self._existing(rt, namespace, name)
        return self._commit(rt, old, body, subresource, dry_run=dry_run, strict=strict)

    def _patch(self, rt: ResourceType, namespace: str | None, name: str, patch_type: str,
               patch: Any, subresource: str | None, *, dry_run: bool = False,
               strict: bool = False) -> Body:
        old = self._store[rt.key].get((namespace, name))
        if old is None:
            if patch_type == kube_patches.APPLY and isinstance(patch, dict):
                body = copy.deepcopy(patch)
                body.setdefault("metadata", {})["name"] = name
                return self._create(rt, namespace, body, dry_run=dry_run, strict=strict)
            raise _not_found(rt, name)
        try:
            if patch_type == kube_patches.JSON_PATCH:
                new = kube_patches.json_patch(old, patch)
            elif patch_type in (kube_patches.STRATEGIC, kube_patches.APPLY):
                new = kube_patches.strategic_merge_patch(old, patch)
            elif patch_type == kube_patches.MERGE:
                new = kube_patches.merge_patch(old, patch)
            else:
                raise KubernetesApiError(415, f"the patch type {patch_type!r} is not supported",
                                         reason="UnsupportedMediaType")
        except kube_patches.PatchError as exc:
            if exc.test_failed:
                raise KubernetesApiError(422, f"the server rejected our request due to an error "
                                         f"in our request: {exc}", reason="Invalid") from exc
            raise KubernetesApiError(422, str(exc), reason="Invalid") from exc
        if not isinstance(new, dict):
            raise KubernetesApiError(422, "the patch did not produce an object", reason="Invalid")
        new_rv = _meta(new).get("resourceVersion")
        if new_rv is not None and new_rv != old["metadata"]["resourceVersion"]:
            # A patch that sets resourceVersion asks for optimistic concurrency.
            raise _conflict(rt, name)
        return self._commit(rt, old, new, subresource, dry_run=dry_run, strict=strict)

    def _delete(self, rt: ResourceType, namespace: str | None, name: str, *,
                propagation: str = "Background", preconditions: Mapping[str, Any] | None = None,
                dry_run: bool = False) -> Body:
        obj = self._existing(rt, namespace, name)
        meta = obj["metadata"]
        pre = preconditions or {}
        if (pre.get("uid") and pre["uid"] != meta["uid"]) or (
                pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]):
            raise _conflict(rt, name)
        is_namespace = rt.key == ("", "v1", "namespaces")
        if not meta.get("finalizers") and not is_namespace:
            return obj if dry_run else self._remove(rt, namespace, name, propagation)
        if meta.get("deletionTimestamp"):
            return obj
        if dry_run:
            return obj
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = _now()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        if rt.tracks_generation:
            new["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
        if is_namespace:
            new["status"] = {"phase": "Terminating"}
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._put(rt, new, obj)
        if is_namespace:
            self._terminating.add(name)
            self._delete_namespace_content(name)
            if ((None, name) in self._store[rt.key] and not self._ns_counts.get(name)
                    and not new["metadata"].get("finalizers")):
                return self._remove(rt, None, name, propagation)
        return new

    def _delete_namespace_content(self, namespace: str) -> None:
        for rt in list(self._types.values()):
            if not rt.namespaced:
                continue
            for key in [k for k in self._store[rt.key] if k[0] == namespace]:
                if key in self._store[rt.key]:
                    self._delete(rt, namespace, key[1])

    def _remove(self, rt: ResourceType, namespace: str | None, name: str,
                propagation: str = "Background") -> Body:
        """Drop the object for good: DELETED event, garbage collection of its dependents."""
        obj = self._store[rt.key].pop((namespace, name))
        final = {**obj, "metadata": {**obj["metadata"], "resourceVersion": self._next_rv()}}
        uid = obj["metadata"]["uid"]
        key = (rt.key, namespace, name)
        self._uids.pop(uid, None)
        self._reindex_owners(key, obj, None)
        kkey = (self._kres(rt), namespace, name)
        if kkey in self._objects:
            self._objects[kkey].delete()
        self._publish(rt, "DELETED", final, obj)
        if namespace is not None:
            self._ns_counts[namespace] -= 1
        for dependent in list(self._dependents.pop(uid, set())):
            self._collect(dependent, uid, propagation)
        if rt.key == ("", "v1", "namespaces"):
            self._terminating.discard(name)
        elif rt.key == _CRDS:
            self._uninstall(obj)
        elif (namespace in self._terminating and not self._ns_counts.get(namespace)
              and (None, namespace) in self._store[("", "v1", "namespaces")]):
            self._remove(self._types[("", "v1", "namespaces")], None, namespace)
        return final

    def _uninstall(self, crd: Mapping[str, Any]) -> None:
        """A deleted CRD takes its custom resources and their objects with it."""
        for crd_rt in kube_resources.resources_from_crd(crd):
            for namespace, name in list(self._store.get(crd_rt.key, {})):
                if (namespace, name) in self._store[crd_rt.key]:
                    self._remove(crd_rt, namespace, name)
            self._types.pop(crd_rt.key, None)
            self._store.pop(crd_rt.key, None)
            self.cut_watches_of(crd_rt.key)

    def _collect(self, key: tuple[ResourceKey, str | None, str], owner_uid: str,
                 propagation: str) -> None:
        rt_key, namespace, name = key
        rt = self._types.get(rt_key)
        obj = self._store.get(rt_key, {}).get((namespace, name))
        if rt is None or obj is None:
            return
        refs = _meta(obj).get("ownerReferences") or []
        remaining = [r for r in refs if r.get("uid") != owner_uid]
        if propagation == "Orphan" or any(r.get("uid") in self._uids for r in remaining):
            new = copy.deepcopy(obj)
            if remaining:
                new["metadata"]["ownerReferences"] = remaining
            else:
                new["metadata"].pop("ownerReferences", None)
            self._commit(rt, obj, new, None)
        else:
            self._delete(rt, namespace, name)

    # --- HTTP ----------------------------------------------------------------------------------

    @property
    def url(self) -> yarl.URL:
        """The base URL where the emulator is served (after :func:`serve` has started)."""
        if self._base_url is None:
            raise RuntimeError("the emulator is not being served; use serve() or EmulatorRunner")
        return yarl.URL(self._base_url)

    def _route(self, path: str) -> _Route:
        parts = [p for p in path.strip("/").split("/")]
        if parts == [""]:
            return _Route("discovery")
        if parts[0] == "api":
            if len(parts) == 1:
                return _Route("discovery", group="")
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) <= 2:
                return _Route("discovery", group=parts[1] if len(parts) == 2 else None)
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return _Route("other")
        if not rest:
            return _Route("discovery", group=group, version=version)
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (
                group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        subresource = "/".join(rest[2:]) or None
        rt = self._types.get((group, version, plural))
        return _Route("resource", rt=rt, namespace=namespace, name=name, subresource=subresource,
                      group=group, version=version, plural=plural)

    @staticmethod
    def _verb(method: str, route: _Route, query: Mapping[str, str]) -> str:
        if route.kind == "discovery":
            return "discovery"
        if route.kind != "resource":
            return "other"
        if method == "GET":
            if query.get("watch") in ("true", "1"):
                return "watch"
            return "get" if route.name else "list"
        return {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if route.name else "deletecollection"}.get(method, "other")

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        route = self._route(raw.path)
        if route.kind == "other" and not (raw.path.startswith("/openapi/") or raw.path in (
                "/version", "/healthz", "/livez", "/readyz")):
            return await self._serve_kmock(raw)
        body = await raw.read()
        verb = self._verb(raw.method, route, raw.query)
        record = self.traffic.record(raw.method, raw.path, verb, group=route.group,
                                     version=route.version, resource=route.plural,
                                     subresource=route.subresource, namespace=route.namespace,
                                     name=route.name)
        response: aiohttp.web.StreamResponse
        try:
            fault = self.traffic.take_fault(record)
            if fault is not None:
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status is not None:
                    error = KubernetesApiError(fault.status, fault.message or
                                               f"injected fault: HTTP {fault.status}",
                                               retry_after=fault.retry_after)
                    if verb == "watch":
                        # Watch failures arrive the way the server sends them: an ERROR
                        # event in an otherwise successful stream (e.g. 410 Expired).
                        response = await self._stream_error_event(raw, error)
                        record.status = response.status
                        return response
                    raise error
            if route.kind == "resource":
                response = await self._serve_resource(raw, route, verb, body, record)
            else:
                response = self._json(self._serve_discovery(raw.path, route))
        except KubernetesApiError as exc:
            response = self._error(exc)
        except Exception as exc:  # a bug of the emulator must reach the client, not hang it
            logger.exception("The emulated API server failed on %s %s", raw.method, raw.path)
            response = self._error(KubernetesApiError(500, f"emulator failure: {exc!r}"))
        record.status = response.status
        return response

    async def _serve_kmock(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Unknown paths go through kmock's own DSL and fallbacks (history kept short)."""
        try:
            response: aiohttp.web.StreamResponse = await super().__call__(raw)
        except Exception as exc:
            response = await self._render_error(exc)
        if len(self._requests) > 1000:
            del self._requests[:-100]
        return response

    @staticmethod
    def _json(payload: Any, status: int = 200) -> aiohttp.web.Response:
        return aiohttp.web.Response(body=json.dumps(payload).encode("utf-8"), status=status,
                                    content_type=_JSON)

    def _error(self, exc: KubernetesApiError) -> aiohttp.web.Response:
        response = self._json(exc.as_status(), exc.status)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    def _serve_discovery(self, path: str, route: _Route) -> Any:
        path = path.rstrip("/") or "/"
        if path == "/version":
            return {"major": "1", "minor": "37", "gitVersion": "v1.37.0-apikey-emulator",
                    "gitCommit": "0" * 40, "gitTreeState": "clean",
                    "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25",
                    "compiler": "gc", "platform": "linux/amd64"}
        if path in ("/healthz", "/livez", "/readyz"):
            return "ok"
        if path == "/openapi/v3":
            return kube_resources.openapi_v3_root([("", "v1"), *self._group_versions()],
                                                  hash_of=str(len(self._types)))
        if path.startswith("/openapi/v3/"):
            gv_parts = path[len("/openapi/v3/"):].split("/")
            group, version = ("", gv_parts[1]) if gv_parts[0] == "api" else (
                gv_parts[1], gv_parts[2] if len(gv_parts) > 2 else "")
            gv_types = [rt for rt in self._types.values()
                        if rt.group == group and rt.version == version]
            if not gv_types:
                raise KubernetesApiError(404, "the server could not find the requested resource")
            return kube_resources.openapi_v3_document(gv_types)
        if path.startswith("/openapi/"):
            # No OpenAPI v2: kubectl asks for it in protobuf and then falls back gracefully.
            raise KubernetesApiError(404, "the server could not find the requested resource")
        if path == "/":
            paths = {"/api", "/api/v1", "/apis", "/version", "/openapi/v3"}
            for group, version in self._group_versions():
                paths |= {f"/apis/{group}", f"/apis/{group}/{version}"}
            return {"paths": sorted(paths)}
        if path == "/api":
            return {"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                    "serverAddress": self.url.authority
                                                    if self._base_url else ""}]}
        if path == "/apis":
            groups: dict[str, list[str]] = collections.defaultdict(list)
            for group, version in self._group_versions():
                groups[group].append(version)
            return {"kind": "APIGroupList", "apiVersion": "v1",
                    "groups": [self._group_doc(g, vs) for g, vs in sorted(groups.items())]}
        if route.version is None and route.group:
            versions = [v for g, v in self._group_versions() if g == route.group]
            if not versions:
                raise KubernetesApiError(404, "the server could not find the requested resource")
            return {"kind": "APIGroup", "apiVersion": "v1",
                    **self._group_doc(route.group, versions)}
        types = [rt for rt in self._types.values()
                 if rt.group == route.group and rt.version == route.version]
        if not types:
            raise KubernetesApiError(404, "the server could not find the requested resource")
        group_version = f"{route.group}/{route.version}" if route.group else route.version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": kube_resources.api_resource_entries(
                    sorted(types, key=lambda rt: rt.plural))}

    def _group_versions(self) -> list[tuple[str, str]]:
        return sorted({(rt.group, rt.version) for rt in self._types.values() if rt.group})

    @staticmethod
    def _group_doc(group: str, versions: Sequence[str]) -> Body:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": entries, "preferredVersion": entries[0]}

    @staticmethod
    def _parse_body(raw: aiohttp.web.BaseRequest, body: bytes) -> Any:
        if "protobuf" in (raw.content_type or ""):
            try:
                return kube_protobuf.decode(body)
            except kube_protobuf.ProtobufError as exc:
                raise KubernetesApiError(415, f"{exc}; the emulator takes JSON (kubectl apply)",
                                         reason="UnsupportedMediaType") from exc
        if not body:
            return None
        try:
            return json.loads(body)
        except ValueError:
            try:
                return yaml.safe_load(body)
            except yaml.YAMLError as exc:
                raise KubernetesApiError(400, f"the body is neither JSON nor YAML: {exc}",
                                         reason="BadRequest") from exc

    async def _serve_resource(self, raw: aiohttp.web.BaseRequest, route: _Route, verb: str,
                              payload: bytes, record: RequestRecord) -> aiohttp.web.StreamResponse:
        rt = route.rt
        if rt is None:
            raise KubernetesApiError(404, "the server could not find the requested resource")
        if route.namespace is not None and not rt.namespaced:
            raise KubernetesApiError(404, "the server could not find the requested resource")
        namespace = route.namespace if rt.namespaced else None
        query = raw.query
        dry_run = query.get("dryRun") == "All"
        # kubectl asks for strict field validation; other clients get silent pruning.
        strict = query.get("fieldValidation") == "Strict"
        if route.name is None and rt.namespaced and namespace is None and verb in (
                "create", "deletecollection"):
            raise KubernetesApiError(404, "the server could not find the requested resource")
        if route.name is not None and rt.namespaced and namespace is None:
            raise KubernetesApiError(404, "the server could not find the requested resource")
        if route.subresource is not None and route.subresource not in rt.subresources:
            raise KubernetesApiError(404, "the server could not find the requested resource")
        if verb == "watch":
            return await self._respond_watch(raw, rt, namespace, route.name)
        if verb == "list":
            return self._respond_list(raw, rt, namespace)
        if verb == "get":
            obj = self._existing(rt, namespace, route.name or "")
            if "as=Table" in raw.headers.get("Accept", ""):
                return self._json(kube_resources.to_table(
                    rt, [obj], resource_version=str(self._rv),
                    include_object=query.get("includeObject", "Metadata")))
            return self._json(obj)
        body = self._parse_body(raw, payload)
        if verb == "create":
            if not isinstance(body, dict):
                raise KubernetesApiError(400, "the body of the request is not an object",
                                         reason="BadRequest")
            created = self._create(rt, namespace, body, dry_run=dry_run, strict=strict)
            record.name = created["metadata"]["name"]  # so that writes per object add up
            record.namespace = created["metadata"].get("namespace")
            return self._json(created, 201)
        if verb == "update":
            return self._json(self._update(rt, namespace, route.name or "", body,
                                           route.subresource, dry_run=dry_run, strict=strict))
        if verb == "patch":
            content_type = (raw.content_type or "").split(";")[0].strip()
            existed = (namespace, route.name) in self._store[rt.key]
            result = self._patch(rt, namespace, route.name or "", content_type, body,
                                 route.subresource, dry_run=dry_run, strict=strict)
            return self._json(result, 200 if existed else 201)
        if verb == "delete":
            options = body if isinstance(body, dict) else {}
            propagation = options.get("propagationPolicy") or query.get(
                "propagationPolicy") or "Background"
            if options.get("dryRun") == ["All"]:
                dry_run = True
            return self._json(self._delete(rt, namespace, route.name or "",
                                           propagation=propagation,
                                           preconditions=options.get("preconditions"),
                                           dry_run=dry_run))
        if verb == "deletecollection":
            deleted = [self._delete(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
                       for obj in list(self._select(rt, namespace, query.get("labelSelector"),
                                                    query.get("fieldSelector")))]
            return self._json({"apiVersion": rt.api_version, "kind": rt.list_kind,
                               "metadata": {"resourceVersion": str(self._rv)},
                               "items": deleted})
        raise KubernetesApiError(405, f"the method {raw.method} is not allowed here",
                                 reason="MethodNotAllowed")

    def _respond_list(self, raw: aiohttp.web.BaseRequest, rt: ResourceType,
                    namespace: str | None) -> aiohttp.web.Response:
        query = raw.query
        items = self._select(rt, namespace, query.get("labelSelector"),
                             query.get("fieldSelector"))
        start = 0
        token = query.get("continue")
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except (ValueError, binascii.Error) as exc:
                raise KubernetesApiError(400, "invalid continue token",
                                         reason="BadRequest") from exc
        limit = int(query.get("limit") or 0)
        next_token: str | None = None
        if limit > 0 and start + limit < len(items):
            next_token = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            page = items[start:start + limit]
        else:
            page = items[start:]
        if "as=Table" in raw.headers.get("Accept", ""):
            return self._json(kube_resources.to_table(
                rt, page, resource_version=str(self._rv),
                include_object=query.get("includeObject", "Metadata"),
                continue_token=next_token))
        metadata: Body = {"resourceVersion": str(self._rv)}
        if next_token:
            metadata["continue"] = next_token
            metadata["remainingItemCount"] = len(items) - start - len(page)
        return self._json({"apiVersion": rt.api_version, "kind": rt.list_kind,
                           "metadata": metadata, "items": page})

    async def _respond_watch(self, raw: aiohttp.web.BaseRequest, rt: ResourceType,
                           namespace: str | None, name: str | None) -> aiohttp.web.StreamResponse:
        query = raw.query
        try:
            labels = kube_selectors.label_matcher(query.get("labelSelector"))
            fields = kube_selectors.field_matcher(query.get("fieldSelector"))
        except kube_selectors.SelectorError as exc:
            raise KubernetesApiError(400, str(exc), reason="BadRequest") from exc
        watcher = _Watcher(namespace=namespace, name=name, labels=labels, fields=fields,
                           queue=asyncio.Queue())
        since = query.get("resourceVersion") or ""
        initial: list[Body] = []
        gone = False
        # A "watch list" (client-go's streaming list) wants the current objects first and then
        # a bookmark that marks the end of them.
        watch_list = query.get("sendInitialEvents") == "true"
        # Registration and the backlog replay happen without an await in between, so no
        # event can fall into the gap between them.
        if since in ("", "0") or watch_list:
            initial = [{"type": "ADDED", "object": obj}
                       for obj in self._select(rt, namespace, None, None) if watcher.wants(obj)]
        else:
            try:
                since_rv = int(since)
            except ValueError as exc:
                raise KubernetesApiError(400, f"invalid resourceVersion {since!r}",
                                         reason="BadRequest") from exc
            if since_rv < self._backlog_floor.get(rt.key, 0):
                gone = True
            else:
                for entry in self._backlog.get(rt.key, ()):
                    if entry.rv > since_rv:
                        event = self._event_for(watcher, entry)
                        if event is not None:
                            initial.append(event)
        if watch_list:
            initial.append({"type": "BOOKMARK", "object": {
                "kind": rt.kind, "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self._rv),
                             "annotations": {"k8s.io/initial-events-end": "true"}}}})
        self._watchers[rt.key].add(watcher)
        response = aiohttp.web.StreamResponse(status=200, headers={
            "Content-Type": _JSON, "Cache-Control": "no-cache, private"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(raw)
            if gone:
                expired = KubernetesApiError(
                    410, f"too old resource version: {since} "
                    f"({self._backlog_floor.get(rt.key, 0)})", reason="Expired")
                await response.write(json.dumps({"type": "ERROR",
                                                 "object": expired.as_status()}).encode() + b"\n")
                return response
            for event in initial:
                await response.write(json.dumps(event).encode("utf-8") + b"\n")
            timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout is not None else None
            while True:
                remaining = deadline - loop.time() if deadline is not None else None
                if remaining is not None and remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if item is None:
                    break
                await response.write(json.dumps(item).encode("utf-8") + b"\n")
        finally:
            self._watchers[rt.key].discard(watcher)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    async def _stream_error_event(self, raw: aiohttp.web.BaseRequest,
                                  error: KubernetesApiError) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": _JSON})
        await response.prepare(raw)
        await response.write(json.dumps({"type": "ERROR", "object": error.as_status()}).encode()
                             + b"\n")
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    def cut_watches_of(self, key: ResourceKey) -> int:
        """End the live watch streams of one resource key; returns how many were cut."""
        watchers = list(self._watchers.get(key, ()))
        for watcher in watchers:
            watcher.queue.put_nowait(None)
        return len(watchers)

    def cut_watches(self, resource: str | ResourceType | None = None) -> int:
        """End the live watch streams (of one resource, or all); returns how many were cut.

        Clients see a normally closed stream and are expected to re-watch, as after a real
        API server's watch timeout.
        """
        keys: Iterable[ResourceKey] = (
            [self.resource_type(resource).key] if resource is not None else list(self._watchers))
        return sum(self.cut_watches_of(key) for key in keys)

    def watch_count(self, resource: str | ResourceType | None = None) -> int:
        """How many watch streams are open (of one resource, or all)."""
        if resource is not None:
            return len(self._watchers.get(self.resource_type(resource).key, ()))
        return sum(len(w) for w in self._watchers.values())


@contextlib.asynccontextmanager
async def serve(emulator: ApiServerEmulator, host: str = "127.0.0.1",
                port: int = 0) -> AsyncIterator[str]:
    """Serve the emulator over HTTP on the running loop; yields its base URL.

    On exit, open watch streams are ended first so that the shutdown does not wait on them.
    """
    server = aiohttp.web.Server(emulator)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, host, port)
    bound_port = listener.sockets[0].getsockname()[1]
    emulator._base_url = f"http://{host}:{bound_port}"
    try:
        yield emulator._base_url
    finally:
        emulator.cut_watches()
        await asyncio.sleep(0)
        listener.close()
        await server.shutdown(timeout=2.0)
        await listener.wait_closed()
        emulator._base_url = None
