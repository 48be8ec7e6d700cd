"""The resource types the emulated API server knows: built-ins, CRDs, discovery and tables."""

from __future__ import annotations

import copy
import datetime
import functools
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
ResourceKey = tuple[str, str, str]  # (group, version, plural)


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry of a CRD (or a built-in table column)."""

    name: str
    type: str
    json_path: str
    priority: int = 0
    description: str = ""


@dataclass(frozen=True, eq=False)
class ResourceType:
    """A served resource: its names, scope, subresources and, for CRs, the schema."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status_subresource: bool = False
    tracks_generation: bool = False
    schema: Mapping[str, Any] | None = None
    printer_columns: tuple[PrinterColumn, ...] = ()
    custom: bool = False
    extra_subresources: tuple[str, ...] = field(default=())

    @property
    def key(self) -> ResourceKey:
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def qualified(self) -> str:
        """The name the API server uses in messages, e.g. ``apikeys.apikeys.dev``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def subresources(self) -> tuple[str, ...]:
        return (("status",) if self.status_subresource else ()) + self.extra_subresources


def _builtin(group: str, version: str, plural: str, kind: str, *, namespaced: bool = True,
             short: Sequence[str] = (), status: bool = False, generation: bool = False,
             categories: Sequence[str] = (), columns: Sequence[PrinterColumn] = (),
             extra: Sequence[str] = ()) -> ResourceType:
    return ResourceType(group=group, version=version, plural=plural, kind=kind,
                        namespaced=namespaced, singular=kind.lower(), short_names=tuple(short),
                        categories=tuple(categories), status_subresource=status,
                        tracks_generation=generation, printer_columns=tuple(columns),
                        extra_subresources=tuple(extra))


_AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


def builtin_resources() -> list[ResourceType]:
    """The built-in resources an operator of this project and kubectl touch."""
    workload_cols = (PrinterColumn("Ready", "string", ".status.readyReplicas"), _AGE)
    return [
        _builtin("", "v1", "namespaces", "Namespace", namespaced=False, short=["ns"],
                 status=True, columns=[PrinterColumn("Status", "string", ".status.phase"), _AGE],
                 extra=["finalize"]),
        _builtin("", "v1", "secrets", "Secret",
                 columns=[PrinterColumn("Type", "string", ".type"),
                          PrinterColumn("Data", "integer", ".data#count"), _AGE]),
        _builtin("", "v1", "configmaps", "ConfigMap", short=["cm"],
                 columns=[PrinterColumn("Data", "integer", ".data#count"), _AGE]),
        _builtin("", "v1", "events", "Event", short=["ev"],
                 columns=[PrinterColumn("Type", "string", ".type"),
                          PrinterColumn("Reason", "string", ".reason"),
                          PrinterColumn("Object", "string", ".involvedObject.name"),
                          PrinterColumn("Message", "string", ".message")]),
        _builtin("", "v1", "pods", "Pod", short=["po"], status=True, categories=["all"],
                 columns=[PrinterColumn("Status", "string", ".status.phase"), _AGE]),
        _builtin("", "v1", "services", "Service", short=["svc"], status=True,
                 categories=["all"]),
        _builtin("", "v1", "serviceaccounts", "ServiceAccount", short=["sa"]),
        _builtin("apps", "v1", "deployments", "Deployment", short=["deploy"], status=True,
                 generation=True, categories=["all"], columns=workload_cols),
        _builtin("apps", "v1", "statefulsets", "StatefulSet", short=["sts"], status=True,
                 generation=True, categories=["all"], columns=workload_cols),
        _builtin("apps", "v1", "daemonsets", "DaemonSet", short=["ds"], status=True,
                 generation=True, categories=["all"], columns=workload_cols),
        _builtin("apps", "v1", "replicasets", "ReplicaSet", short=["rs"], status=True,
                 generation=True, categories=["all"], columns=workload_cols),
        _builtin("events.k8s.io", "v1", "events", "Event", short=["ev"]),
        _builtin("coordination.k8s.io", "v1", "leases", "Lease"),
        _builtin("kopf.dev", "v1", "kopfpeerings", "KopfPeering"),
        _builtin("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering",
                 namespaced=False),
        _builtin("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "CustomResourceDefinition", namespaced=False, short=["crd", "crds"],
                 status=True, generation=True, categories=["api-extensions"]),
    ]


def resources_from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition document, as resource types."""
    spec = crd["spec"]
    names = spec["names"]
    result: list[ResourceType] = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        columns = tuple(
            PrinterColumn(name=c["name"], type=c.get("type", "string"), json_path=c["jsonPath"],
                          priority=int(c.get("priority", 0)), description=c.get("description", ""))
            for c in version.get("additionalPrinterColumns") or []
        ) or (_AGE,)
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        result.append(ResourceType(
            group=spec["group"], version=version["name"], plural=names["plural"],
            kind=names["kind"], namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular", names["kind"].lower()),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            status_subresource="status" in (version.get("subresources") or {}),
            tracks_generation=True, schema=schema, printer_columns=columns, custom=True,
        ))
    return result


def load_crd_documents(paths: Iterable[str | pathlib.Path]) -> list[dict[str, Any]]:
    """Read every CustomResourceDefinition from YAML files or folders of YAML files."""
    docs: list[dict[str, Any]] = []
    for raw_path in paths:
        path = pathlib.Path(raw_path)
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            docs.extend(copy.deepcopy(_parse_crds(str(file.resolve()), stat.st_mtime_ns,
                                                  stat.st_size)))
    return docs


@functools.lru_cache(maxsize=64)
def _parse_crds(path: str, mtime_ns: int, size: int) -> list[dict[str, Any]]:
    # Parsing YAML is the slowest part of starting an emulator; tests start one each.
    text = pathlib.Path(path).read_text(encoding="utf-8")
    return [doc for doc in yaml.safe_load_all(text)
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"]


def api_resource_entries(types: Iterable[ResourceType]) -> list[dict[str, Any]]:
    """The ``resources`` of an APIResourceList for one group/version."""
    entries: list[dict[str, Any]] = []
    for rt in types:
        entries.append({
            "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": list(rt.verbs), "shortNames": list(rt.short_names),
            "categories": list(rt.categories), "storageVersionHash": "",
        })
        for sub in rt.subresources:
            entries.append({"name": f"{rt.plural}/{sub}", "singularName": "",
                            "namespaced": rt.namespaced, "kind": rt.kind,
                            "verbs": ["get", "patch", "update"]})
    return entries


# --- tables for kubectl's server-side printing ------------------------------------------------

_FILTER_RE = re.compile(r'^\?\(@\.([A-Za-z0-9_.]+)\s*==\s*["\']?([^"\']*)["\']?\)$')


def jsonpath_values(obj: Any, path: str) -> list[Any]:
    """Evaluate the JSONPath subset of printer columns.

    Supported: ``.a.b``, ``[0]``, ``[*]`` and ``[?(@.k=="v")]``.
    """
    tokens = re.findall(r"\[[^\]]*\]|[^.\[]+", path.strip().lstrip("$").strip("{}"))
    current: list[Any] = [obj]
    for token in tokens:
        following: list[Any] = []
        for item in current:
            if token.startswith("["):
                inner = token[1:-1].strip()
                if not isinstance(item, list):
                    continue
                if inner == "*":
                    following.extend(item)
                elif inner.lstrip("-").isdigit():
                    index = int(inner)
                    if -len(item) <= index < len(item):
                        following.append(item[index])
                elif match := _FILTER_RE.match(inner):
                    key, wanted = match.groups()
                    following.extend(e for e in item if _field_equals(e, key, wanted))
            elif isinstance(item, dict) and token in item:
                following.append(item[token])
        current = following
    return current


def _field_equals(item: Any, key: str, wanted: str) -> bool:
    values = jsonpath_values(item, "." + key) if isinstance(item, dict) else []
    return bool(values) and str(values[0]) == wanted


def _age(timestamp: str, now: datetime.datetime) -> str:
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return f"in {_duration(-seconds)}"
    return _duration(seconds)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours}h{minutes}m" if hours < 8 and minutes else f"{hours}h"
    return f"{seconds // 86400}d"


def _cell(obj: Mapping[str, Any], column: PrinterColumn, now: datetime.datetime) -> Any:
    if column.json_path.endswith("#count"):
        values = jsonpath_values(obj, column.json_path[: -len("#count")])
        return len(values[0]) if values and isinstance(values[0], dict | list) else 0
    values = jsonpath_values(obj, column.json_path)
    if not values:
        return None
    value = values[0]
    if column.type == "date" and isinstance(value, str):
        return _age(value, now)
    if isinstance(value, dict | list):
        return str(value)
    return value


def to_table(rt: ResourceType, objects: Sequence[Mapping[str, Any]], *, resource_version: str,
             include_object: str, continue_token: str | None = None) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of the objects, with the printer columns of the resource."""
    now = datetime.datetime.now(tz=datetime.UTC)
    columns = [PrinterColumn("Name", "string", ".metadata.name"), *rt.printer_columns]
    rows = []
    for obj in objects:
        cells = [_cell(obj, column, now) for column in columns]
        if include_object == "Object":
            row_object: Mapping[str, Any] = obj
        elif include_object == "None":
            row_object = {}
        else:
            row_object = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                          "metadata": obj.get("metadata", {})}
        rows.append({"cells": cells, "object": row_object})
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    return {
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
        "columnDefinitions": [
            {"name": c.name, "type": "string" if c.type == "date" else c.type,
             "format": "name" if c.name == "Name" else "", "description": c.description,
             "priority": c.priority}
            for c in columns
        ],
        "rows": rows,
    }


# --- OpenAPI v3, as much as kubectl reads -----------------------------------------------------
#
# kubectl asks the OpenAPI v3 documents whether PATCH of a kind takes the ``fieldValidation``
# query parameter (then it leaves validation to the server) and whether it takes strategic
# merge patches. Only merge, JSON and apply patches are listed, so kubectl computes strategic
# patches for built-ins from its own types and JSON merge patches for custom resources, as
# it does against a real cluster.

_PATCH_TYPES = ("application/merge-patch+json", "application/json-patch+json",
                "application/apply-patch+yaml")


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3_root(group_versions: Iterable[tuple[str, str]], hash_of: str) -> dict[str, Any]:
    """The ``/openapi/v3`` index: one document per group/version."""
    return {"paths": {
        _gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={hash_of}"}
        for g, v in group_versions
    }}


def openapi_v3_document(types: Sequence[ResourceType]) -> dict[str, Any]:
    """The OpenAPI v3 document of one group/version: operations and, for CRs, schemas."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in types:
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        params = [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                  {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                  {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}]
        base = "/" + _gv_path(rt.group, rt.version)
        collection = (f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced
                      else f"{base}/{rt.plural}")
        operation = {"x-kubernetes-group-version-kind": gvk, "parameters": params,
                     "responses": {"200": {"description": "OK"}}}
        paths[collection] = {"post": {**operation, "x-kubernetes-action": "post"},
                             "get": {**operation, "x-kubernetes-action": "list"}}
        paths[f"{collection}/{{name}}"] = {
            "get": {**operation, "x-kubernetes-action": "get"},
            "put": {**operation, "x-kubernetes-action": "put"},
            "delete": {**operation, "x-kubernetes-action": "delete"},
            "patch": {**operation, "x-kubernetes-action": "patch",
                      "requestBody": {"content": {t: {"schema": {"type": "object"}}
                                                  for t in _PATCH_TYPES}}},
        }
        if rt.schema is not None:
            reversed_group = ".".join(reversed(rt.group.split(".")))
            schemas[f"{reversed_group}.{rt.version}.{rt.kind}"] = {
                **rt.schema, "x-kubernetes-group-version-kind": [gvk]}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.37.0"},
            "paths": paths, "components": {"schemas": schemas}}
