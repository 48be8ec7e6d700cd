"""Render the Helm chart with Helm's own Go engine (helm-sdkpy) and print the manifests.

helm-sdkpy exposes Helm's install action but no client-only `helm template`, so the
install runs against a recording API server defined here: it answers discovery and
accepts every write, and the objects Helm creates are the rendered manifests. The
templates, values schema, CRD handling and ordering are Helm's; this file only listens.

Runs under Python 3.12 (helm-sdkpy's floor); the tests call it in a subprocess:

    python3.12 tests/chart/render.py CHART --values FILE.json [--namespace NS] [--release NAME]
    python3.12 tests/chart/render.py CHART --lint

and read one JSON document from stdout: {"objects": [...], "notes": "..."}, or with
--lint Helm's lint report: {"messages": [{"severity": 1, "path": ...}], "errors": [...]}.
Standard library only, besides helm_sdkpy.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

KUBE_VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"}


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# What a cluster with the Prometheus Operator installed serves, as far as the chart can use.
BUILTIN = [
    Resource("", "v1", "namespaces", "Namespace", False),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "configmaps", "ConfigMap", True),
    Resource("", "v1", "services", "Service", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True),
    Resource("", "v1", "events", "Event", True),
    Resource("", "v1", "pods", "Pod", True),
    Resource("apps", "v1", "deployments", "Deployment", True),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True),
    Resource("apps", "v1", "daemonsets", "DaemonSet", True),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True),
    Resource(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False
    ),
    Resource("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor", True),
    Resource("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule", True),
]


PROTOBUF_MAGIC = b"k8s\x00"


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one protobuf message: varints and byte strings."""
    pos = 0

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while pos < len(data):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            yield number, varint()
        elif wire == 2:
            size = varint()
            yield number, data[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")


def _string_map(entries: list[bytes]) -> dict[str, str]:
    result = {}
    for entry in entries:
        parts = dict(_fields(entry))
        key, value = parts.get(1, b""), parts.get(2, b"")
        assert isinstance(key, bytes) and isinstance(value, bytes)
        result[key.decode()] = value.decode()
    return result


def secret_from_protobuf(raw: bytes) -> dict[str, Any]:
    """The name, labels and type of a v1 Secret sent in Kubernetes' protobuf envelope."""
    envelope = dict(_fields(raw[len(PROTOBUF_MAGIC) :]))
    body = envelope[2]
    assert isinstance(body, bytes)
    secret: dict[str, list[int | bytes]] = {}
    for number, value in _fields(body):
        secret.setdefault(number, []).append(value)
    meta: dict[int, list[bytes]] = {}
    for number, value in _fields(bytes(secret[1][0])):  # type: ignore[arg-type]
        if isinstance(value, bytes):
            meta.setdefault(number, []).append(value)
    kind_type = secret.get(3, [b""])[0]
    assert isinstance(kind_type, bytes)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": meta[1][0].decode(), "labels": _string_map(meta.get(11, []))},
        "type": kind_type.decode(),
    }


class Recorder:
    """The API server's state: served resources and every object written, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.resources = list(BUILTIN)
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.order: list[tuple[str, str, str, str]] = []
        self.sent: dict[tuple[str, str, str, str], dict[str, Any]] = {}

    def find(self, group: str, version: str, plural: str) -> Resource | None:
        for res in self.resources:
            if (res.group, res.version, res.plural) == (group, version, plural):
                return res
        return None

    def store(self, key: tuple[str, str, str, str], obj: dict[str, Any]) -> None:
        with self.lock:
            if key not in self.objects:
                self.order.append(key)
                # Exactly what Helm sent, before this server adds uid, status and the like.
                self.sent[key] = copy.deepcopy(obj)
            self.objects[key] = obj
            if obj.get("kind") == "CustomResourceDefinition":
                self._serve_crd(obj)

    def _serve_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served") and not self.find(
                spec["group"], version["name"], spec["names"]["plural"]
            ):
                self.resources.append(
                    Resource(
                        spec["group"],
                        version["name"],
                        spec["names"]["plural"],
                        spec["names"]["kind"],
                        spec["scope"] == "Namespaced",
                    )
                )
        crd["status"] = {
            "acceptedNames": spec["names"],
            "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
            "conditions": [
                {"type": t, "status": "True", "reason": t, "message": ""}
                for t in ("NamesAccepted", "Established")
            ],
        }


def make_handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: stdout carries the result."""

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self, what: str) -> None:
            self._send(
                404,
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                    "message": f"{what} not found",
                },
            )

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            if raw.startswith(PROTOBUF_MAGIC):
                # client-go writes Helm's release Secrets as protobuf.
                return secret_from_protobuf(raw)
            result: dict[str, Any] = json.loads(raw or b"{}")
            return result

        def _discovery(self, path: str) -> bool:
            if path == "/version":
                self._send(200, KUBE_VERSION)
            elif path == "/api":
                self._send(
                    200,
                    {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
                )
            elif path == "/apis":
                groups: dict[str, list[str]] = {}
                for res in recorder.resources:
                    if res.group and res.version not in groups.setdefault(res.group, []):
                        groups[res.group].append(res.version)
                self._send(
                    200,
                    {
                        "kind": "APIGroupList",
                        "apiVersion": "v1",
                        "groups": [
                            {
                                "name": g,
                                "versions": [
                                    {"groupVersion": f"{g}/{v}", "version": v} for v in vs
                                ],
                                "preferredVersion": {
                                    "groupVersion": f"{g}/{vs[0]}",
                                    "version": vs[0],
                                },
                            }
                            for g, vs in groups.items()
                        ],
                    },
                )
            else:
                parts = path.strip("/").split("/")
                if parts[:1] == ["api"] and len(parts) == 2:
                    group, version = "", parts[1]
                elif parts[:1] == ["apis"] and len(parts) == 3:
                    group, version = parts[1], parts[2]
                else:
                    return False
                served = [r for r in recorder.resources if (r.group, r.version) == (group, version)]
                if not served:
                    self._not_found(path)
                    return True
                self._send(
                    200,
                    {
                        "kind": "APIResourceList",
                        "apiVersion": "v1",
                        "groupVersion": served[0].group_version,
                        "resources": [
                            {
                                "name": r.plural,
                                "singularName": r.kind.lower(),
                                "kind": r.kind,
                                "namespaced": r.namespaced,
                                "verbs": [
                                    "create",
                                    "delete",
                                    "get",
                                    "list",
                                    "patch",
                                    "update",
                                    "watch",
                                ],
                            }
                            for r in served
                        ],
                    },
                )
            return True

        def _route(self, path: str) -> tuple[Resource, str, str | None] | None:
            """(resource, namespace, name) for an object or collection path."""
            parts = path.strip("/").split("/")
            if parts[:1] == ["api"]:
                group, version, rest = "", parts[1], parts[2:]
            elif parts[:1] == ["apis"] and len(parts) >= 3:
                group, version, rest = parts[1], parts[2], parts[3:]
            else:
                return None
            namespace = ""
            if len(rest) >= 3 and rest[0] == "namespaces":
                namespace, rest = rest[1], rest[2:]
            if not rest:
                return None
            res = recorder.find(group, version, rest[0])
            if res is None:
                return None
            return res, namespace, rest[1] if len(rest) > 1 else None

        def _handle(self) -> None:
            url = urlsplit(self.path)
            if self.command == "GET" and self._discovery(url.path):
                return
            route = self._route(url.path)
            if route is None:
                self._not_found(url.path)
                return
            res, namespace, name = route
            if self.command == "GET" and name is None:
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                wanted = dict(p.split("=", 1) for p in selector.split(",") if "=" in p)
                items = [
                    obj
                    for key, obj in recorder.objects.items()
                    if key[:3] == (res.group_version, res.plural, namespace)
                    and all(
                        obj["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items()
                    )
                ]
                self._send(
                    200,
                    {
                        "kind": f"{res.kind}List",
                        "apiVersion": res.group_version,
                        "metadata": {"resourceVersion": "1"},
                        "items": items,
                    },
                )
                return
            if self.command == "POST":
                obj = self._body()
                name = obj["metadata"].get("name") or obj["metadata"]["generateName"] + "x"
            elif name is None:
                self._not_found(url.path)
                return
            key = (res.group_version, res.plural, namespace, name)
            if self.command == "GET":
                found = recorder.objects.get(key)
                if found is None:
                    self._not_found(f"{res.plural} {name}")
                else:
                    self._send(200, found)
            elif self.command in ("POST", "PUT", "PATCH"):
                obj = obj if self.command == "POST" else self._body()
                if self.command == "PATCH":
                    obj = {**recorder.objects.get(key, {}), **obj}
                recorder.store(key, copy.deepcopy(obj))
                obj = recorder.objects[key]
                meta = obj.setdefault("metadata", {})
                meta.update(
                    name=name,
                    uid=str(uuid.uuid4()),
                    resourceVersion="1",
                    creationTimestamp="2026-01-01T00:00:00Z",
                )
                if namespace:
                    meta["namespace"] = namespace
                self._send(201 if self.command == "POST" else 200, obj)
            elif self.command == "DELETE":
                recorder.objects.pop(key, None)
                self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            else:
                self._not_found(url.path)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler


@contextmanager
def recording_server() -> Iterator[tuple[Recorder, str]]:
    """A recording API server on a free loopback port, stopped on exit."""
    recorder = Recorder()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(recorder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def kubeconfig(server: str) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "render",
            "clusters": [{"name": "render", "cluster": {"server": server}}],
            "users": [{"name": "render", "user": {"token": "render"}}],
            "contexts": [{"name": "render", "context": {"cluster": "render", "user": "render"}}],
        }
    )


def render(chart: Path, values: dict[str, Any], namespace: str, release: str) -> dict[str, Any]:
    """Install the chart into the recording server; return the objects Helm created."""
    import helm_sdkpy  # only in the 3.12 venv

    with recording_server() as (recorder, url), tempfile.TemporaryDirectory() as home:
        config_path = Path(home) / "kubeconfig"
        config_path.write_text(kubeconfig(url), encoding="utf-8")
        config = helm_sdkpy.Configuration(namespace=namespace, kubeconfig=str(config_path))
        result = asyncio.run(
            helm_sdkpy.Install(config).run(
                release, str(chart), values=values or None, wait=False, timeout=60
            )
        )
        objects = [
            recorder.sent[key]
            for key in recorder.order
            if key in recorder.objects
            # Helm's own release record is storage, not part of the chart.
            and recorder.sent[key].get("metadata", {}).get("labels", {}).get("owner") != "helm"
        ]
    notes = ""
    if isinstance(result, dict):
        info = result.get("info") or {}
        notes = info.get("notes", "") if isinstance(info, dict) else ""
    return {"objects": objects, "notes": notes, "release": _scalar_fields(result)}


def lint(chart: Path) -> dict[str, Any]:
    """`helm lint` through Helm's library; severities 1 info, 2 warning, 3 error."""
    import helm_sdkpy  # only in the 3.12 venv

    with recording_server() as (_, url), tempfile.TemporaryDirectory() as home:
        config_path = Path(home) / "kubeconfig"
        config_path.write_text(kubeconfig(url), encoding="utf-8")
        config = helm_sdkpy.Configuration(namespace="apikey-operator", kubeconfig=str(config_path))
        report = asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))
    return {
        "messages": [
            {"severity": m.get("Severity"), "path": m.get("Path"), "error": str(m.get("Err"))}
            for m in report.get("Messages") or []
        ],
        "errors": [str(e) for e in report.get("Errors") or []],
    }


def _scalar_fields(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        return {}
    return {k: v for k, v in result.items() if isinstance(v, str | int | float | bool)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chart", type=Path)
    parser.add_argument("--values", type=Path, help="a JSON file of values")
    parser.add_argument("--namespace", default="apikey-operator")
    parser.add_argument("--release", default="apikey-operator")
    parser.add_argument("--lint", action="store_true", help="run helm lint instead")
    args = parser.parse_args()
    values = json.loads(args.values.read_text(encoding="utf-8")) if args.values else {}
    try:
        if args.lint:
            output = lint(args.chart)
        else:
            output = render(args.chart, values, args.namespace, args.release)
    except Exception as exc:  # report Helm's own message to the calling test
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
