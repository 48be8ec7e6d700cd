"""``python -m bench.http_clients [--sizes 200,1000] [--repeat 1]``: HTTP clients compared.

Issue 17 asks which Kubernetes client the operator should speak through. Each candidate runs
the same workload, from asyncio, against one fresh real control plane (kube-apiserver, etcd;
no controller manager: nothing here needs one), each in a process of its own so that its CPU
and the memory its import and use add are its alone:

1. ``create``: N labelled Secrets (the shape the operator writes: data, labels, annotations);
2. ``patch``: N JSON patches of ApiKey status subresources (a ``test`` of the uid, then an
   ``add`` of a status with a Ready condition, as ``kube.patch_apikey_status`` sends);
3. ``get``: N Secret GETs, every second one of a name that does not exist (a 404, as every
   provisioning GET is);
4. ``watch``: a label-selected Secret watch from no resourceVersion, read until it has
   delivered N events (the server's synthetic ADDED events for the N Secrets of step 1:
   the decode cost per event, which is what a watch costs the operator).

Requests run 16 at a time (``--concurrency``; the operator's store-call slots). The
candidates: lightkube (what ``kube.py`` uses, on httpx), the official ``kubernetes`` client
(synchronous: from asyncio through a thread pool as wide as the concurrency, which is how an
async operator would have to use it, GIL contention and all), ``kubernetes_asyncio`` (on
aiohttp, which kopf already loads) and raw aiohttp with ``json`` (kopf's own stack: kopf's
``kopf._cogs.clients`` helpers need kopf's credential vault and a running operator context,
so the raw calls stand in for them; they do what those helpers do). A fifth, raw httpx
(``httpx2``, lightkube's transport) with ``json``, tells lightkube's models from its
transport.

CPU is the client process's user + system time (``resource.getrusage``, all threads),
per request (per event for the watch). RSS: VmRSS before the import (Python, asyncio, json,
yaml and ssl loaded), after the import, after the workload. The kube-apiserver's CPU in the
same window is reported too: a client that sends the same requests should cost the server
the same. ``make bench-http-clients`` runs it in a venv of its own (``.venv-http-clients``,
the ``http-clients`` extra): kopf's login would load the ``kubernetes`` client into every
operator process ``make bench`` measures if it were installed next to the operator.
Writes ``HTTP_CLIENTS.md`` and ``http_clients.json`` next to this file; the prose in
``HTTP_CLIENTS_NOTES.md`` is appended as the analysis.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import pathlib
import resource
import secrets
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from typing import Any, Protocol

import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
GROUP, VERSION, PLURAL = "apikeys.dev", "v1alpha1", "apikeys"
CLIENTS = ("lightkube", "kubernetes", "kubernetes_asyncio", "aiohttp", "httpx")
PHASES = ("create", "patch", "get", "watch")
LABEL = "bench.apikeys.dev/http-client"
# The distribution each candidate is installed as (for the version in the table).
DISTRIBUTIONS = {"lightkube": "lightkube", "kubernetes": "kubernetes",
                 "kubernetes_asyncio": "kubernetes_asyncio", "aiohttp": "aiohttp",
                 "httpx": "httpx2"}


def rss_mb() -> float:
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    """User + system CPU of this process, every thread (the sync client's pool included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proc_cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the workload's bodies -----------------------------------------------------------------

def secret_body(namespace: str, name: str, client: str) -> dict[str, Any]:
    # Random bytes of a key's size: the payload is realistic and never printed.
    value = base64.b64encode(secrets.token_bytes(32)).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {LABEL: client, "apikeys.dev/managed-by": "bench"},
                         "annotations": {"apikeys.dev/key-version": "1"}},
            "data": {"api-key": value, "api-key-previous": value}}


def status_ops(uid: str) -> list[dict[str, Any]]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [{"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": "/status", "value": {
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now,
                                "reason": "Provisioned", "message": "key version 1 is current",
                                "observedGeneration": 1}],
                "currentKey": {"version": 1, "fingerprint": "sha256:" + "0" * 12,
                               "createdAt": now}}}]


def apikey_body(namespace: str, name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": namespace}, "spec": {}}


def read_kubeconfig(path: pathlib.Path) -> tuple[str, str, str]:
    """(server, CA PEM, bearer token) of the harness's one-cluster kubeconfig."""
    config = yaml.safe_load(path.read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    return cluster["server"], ca, config["users"][0]["user"]["token"]


# --- the candidates ------------------------------------------------------------------------

class Candidate(Protocol):
    async def open(self, kubeconfig: pathlib.Path, concurrency: int) -> None: ...
    async def create_secret(self, body: dict[str, Any]) -> None: ...
    async def patch_status(self, namespace: str, name: str, ops: list[dict[str, Any]]
                           ) -> None: ...
    async def get_secret(self, namespace: str, name: str) -> bool: ...
    async def watch_secrets(self, namespace: str, client: str, count: int) -> int: ...
    async def close(self) -> None: ...


class Lightkube:
    """lightkube's AsyncClient as ``kube.py`` drives it: models from dicts, JSON patches."""

    async def open(self, kubeconfig: pathlib.Path, concurrency: int) -> None:
        from lightkube import AsyncClient, KubeConfig
        from lightkube.generic_resource import create_namespaced_resource

        self.client = AsyncClient(config=KubeConfig.from_file(kubeconfig),
                                  field_manager="apikey-operator")
        self.apikey = create_namespaced_resource(GROUP, VERSION, "ApiKey", PLURAL)

    async def create_secret(self, body: dict[str, Any]) -> None:
        from lightkube.resources.core_v1 import Secret

        # kube.py returns plain dicts: to_dict() is part of what each call costs it.
        (await self.client.create(Secret.from_dict(body))).to_dict()

    async def patch_status(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        from lightkube.types import PatchType

        (await self.client.patch(self.apikey.Status, name=name, namespace=namespace, obj=ops,
                                 patch_type=PatchType.JSON)).to_dict()

    async def get_secret(self, namespace: str, name: str) -> bool:
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Secret

        try:
            (await self.client.get(Secret, name=name, namespace=namespace)).to_dict()
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        return True

    async def watch_secrets(self, namespace: str, client: str, count: int) -> int:
        from lightkube.resources.core_v1 import Secret

        seen = 0
        async for _event, obj in self.client.watch(Secret, namespace=namespace,
                                                   labels={LABEL: client}):
            obj.to_dict()
            seen += 1
            if seen >= count:
                break
        return seen

    async def close(self) -> None:
        await self.client.close()


class KubernetesSync:
    """The official client: blocking calls, each in a worker thread of a pool as wide as the
    concurrency (its urllib3 pool too), responses deserialized into its models (its default;
    ``_preload_content=False`` would skip that, but then the caller parses the JSON)."""

    async def open(self, kubeconfig: pathlib.Path, concurrency: int) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig),
                                client_configuration=configuration)
        configuration.connection_pool_maxsize = concurrency
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="k8s")

    async def _run(self, call: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def create_secret(self, body: dict[str, Any]) -> None:
        namespace = body["metadata"]["namespace"]
        await self._run(lambda: self.core.create_namespaced_secret(
            namespace, body, field_manager="apikey-operator"))

    async def patch_status(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        await self._run(lambda: self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, ops,
            _content_type="application/json-patch+json"))

    async def get_secret(self, namespace: str, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            await self._run(lambda: self.core.read_namespaced_secret(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def watch_secrets(self, namespace: str, client: str, count: int) -> int:
        from kubernetes import watch

        def stream() -> int:
            seen = 0
            w = watch.Watch()
            for _event in w.stream(self.core.list_namespaced_secret, namespace,
                                   label_selector=f"{LABEL}={client}", timeout_seconds=300):
                seen += 1
                if seen >= count:
                    w.stop()
                    break
            return seen

        return int(await self._run(stream))

    async def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.api_client.close()


class KubernetesAsyncio:
    """kubernetes_asyncio: the official client's generated API over aiohttp, models too."""

    async def open(self, kubeconfig: pathlib.Path, concurrency: int) -> None:
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(kubeconfig),
                                      client_configuration=configuration)
        configuration.connection_pool_maxsize = concurrency
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)

    async def create_secret(self, body: dict[str, Any]) -> None:
        await self.core.create_namespaced_secret(body["metadata"]["namespace"], body,
                                                 field_manager="apikey-operator")

    async def patch_status(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        await self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, ops,
            _content_type="application/json-patch+json")

    async def get_secret(self, namespace: str, name: str) -> bool:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def watch_secrets(self, namespace: str, client: str, count: int) -> int:
        from kubernetes_asyncio import watch

        seen = 0
        async with watch.Watch() as w:
            async for _event in w.stream(self.core.list_namespaced_secret, namespace,
                                         label_selector=f"{LABEL}={client}",
                                         timeout_seconds=300):
                seen += 1
                if seen >= count:
                    w.stop()
                    break
        return seen

    async def close(self) -> None:
        await self.api_client.close()


class RawAiohttp:
    """aiohttp and ``json`` with plain dicts, as kopf's own API calls are made."""

    async def open(self, kubeconfig: pathlib.Path, concurrency: int) -> None:
        import aiohttp

        server, ca, token = read_kubeconfig(kubeconfig)
        context = ssl.create_default_context(cadata=ca)
        self.session = aiohttp.ClientSession(
            base_url=server, headers={"Authorization": f"Bearer {token}",
                                      "Accept": "application/json"},
            connector=aiohttp.TCPConnector(ssl=context, limit=concurrency))
        self.timeout = aiohttp.ClientTimeout(total=None, sock_read=300)

    @staticmethod
    def _check(status: int, text: bytes) -> None:
        if status >= 400:
            raise RuntimeError(f"HTTP {status}: {text[:300]!r}")

    async def create_secret(self, body: dict[str, Any]) -> None:
        path = f"/api/v1/namespaces/{body['metadata']['namespace']}/secrets"
        async with self.session.post(path, json=body,
                                     params={"fieldManager": "apikey-operator"}) as response:
            raw = await response.read()
            self._check(response.status, raw)
            json.loads(raw)

    async def patch_status(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        async with self.session.patch(
                path, data=json.dumps(ops),
                headers={"Content-Type": "application/json-patch+json"}) as response:
            raw = await response.read()
            self._check(response.status, raw)
            json.loads(raw)

    async def get_secret(self, namespace: str, name: str) -> bool:
        async with self.session.get(f"/api/v1/namespaces/{namespace}/secrets/{name}"
                                    ) as response:
            raw = await response.read()
            if response.status == 404:
                return False
            self._check(response.status, raw)
            json.loads(raw)
        return True

    async def watch_secrets(self, namespace: str, client: str, count: int) -> int:
        seen = 0
        async with self.session.get(
                f"/api/v1/namespaces/{namespace}/secrets",
                params={"watch": "true", "labelSelector": f"{LABEL}={client}",
                        "timeoutSeconds": "300"}, timeout=self.timeout) as response:
            self._check(response.status, b"")
            async for line in response.content:
                if line.strip():
                    json.loads(line)
                    seen += 1
                    if seen >= count:
                        break
        return seen

    async def close(self) -> None:
        await self.session.close()


class RawHttpx:
    """httpx (the ``httpx2`` fork lightkube 1.0 runs on) and ``json`` with plain dicts:
    lightkube's transport without lightkube's models, to tell which of the two costs."""

    async def open(self, kubeconfig: pathlib.Path, concurrency: int) -> None:
        import httpx2

        server, ca, token = read_kubeconfig(kubeconfig)
        self.client = httpx2.AsyncClient(
            base_url=server, verify=ssl.create_default_context(cadata=ca),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            limits=httpx2.Limits(max_connections=concurrency),
            timeout=httpx2.Timeout(30.0, read=300.0))

    async def create_secret(self, body: dict[str, Any]) -> None:
        response = await self.client.post(
            f"/api/v1/namespaces/{body['metadata']['namespace']}/secrets",
            content=json.dumps(body), params={"fieldManager": "apikey-operator"},
            headers={"Content-Type": "application/json"})
        RawAiohttp._check(response.status_code, response.content)
        json.loads(response.content)

    async def patch_status(self, namespace: str, name: str, ops: list[dict[str, Any]]) -> None:
        response = await self.client.patch(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status",
            content=json.dumps(ops), headers={"Content-Type": "application/json-patch+json"})
        RawAiohttp._check(response.status_code, response.content)
        json.loads(response.content)

    async def get_secret(self, namespace: str, name: str) -> bool:
        response = await self.client.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        if response.status_code == 404:
            return False
        RawAiohttp._check(response.status_code, response.content)
        json.loads(response.content)
        return True

    async def watch_secrets(self, namespace: str, client: str, count: int) -> int:
        seen = 0
        async with self.client.stream(
                "GET", f"/api/v1/namespaces/{namespace}/secrets",
                params={"watch": "true", "labelSelector": f"{LABEL}={client}",
                        "timeoutSeconds": "300"}) as response:
            RawAiohttp._check(response.status_code, b"")
            async for line in response.aiter_lines():
                if line.strip():
                    json.loads(line)
                    seen += 1
                    if seen >= count:
                        break
        return seen

    async def close(self) -> None:
        await self.client.aclose()


def candidate(name: str) -> Candidate:
    """The candidate's object; its library is imported only inside ``open``."""
    classes: dict[str, Callable[[], Candidate]] = {
        "lightkube": Lightkube, "kubernetes": KubernetesSync,
        "kubernetes_asyncio": KubernetesAsyncio, "aiohttp": RawAiohttp, "httpx": RawHttpx}
    return classes[name]()


def import_client(name: str) -> None:
    """Import what the candidate's calls will use, so the import's RSS is measured apart."""
    modules = {
        "lightkube": ("lightkube", "lightkube.resources.core_v1", "lightkube.generic_resource"),
        "kubernetes": ("kubernetes.client", "kubernetes.config", "kubernetes.watch"),
        "kubernetes_asyncio": ("kubernetes_asyncio.client", "kubernetes_asyncio.config",
                               "kubernetes_asyncio.watch"),
        "aiohttp": ("aiohttp",),
        "httpx": ("httpx2",),
    }[name]
    import importlib

    for module in modules:
        importlib.import_module(module)


# --- one candidate's run (a child process) -------------------------------------------------

async def bounded(concurrency: int, calls: Iterable[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(c) for c in calls))


async def work(name: str, kubeconfig: pathlib.Path, namespace: str, uids: Mapping[str, str],
               concurrency: int, apiserver_pid: int) -> dict[str, Any]:
    rss_start = rss_mb()
    started = time.monotonic()
    import_client(name)
    rss_imported = rss_mb()
    import_seconds = round(time.monotonic() - started, 3)
    impl = candidate(name)
    await impl.open(kubeconfig, concurrency)
    names = sorted(uids)
    n = len(names)

    def create(key: str) -> Callable[[], Awaitable[None]]:
        return lambda: impl.create_secret(secret_body(namespace, key, name))

    def patch(key: str) -> Callable[[], Awaitable[None]]:
        return lambda: impl.patch_status(namespace, key, status_ops(uids[key]))

    def get(index: int, key: str) -> Callable[[], Awaitable[bool]]:
        # Every second GET asks for a name that was never created: a 404.
        return lambda: impl.get_secret(namespace, key if index % 2 == 0 else f"{key}-absent")

    phases: dict[str, dict[str, Any]] = {}

    async def phase(label: str, run: Callable[[], Awaitable[Any]]) -> Any:
        cpu0, api0, wall0 = cpu_seconds(), proc_cpu_seconds(apiserver_pid), time.monotonic()
        result = await run()
        wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
        phases[label] = {"requests": n, "wall_seconds": round(wall, 3),
                         "cpu_seconds": round(cpu, 3),
                         "cpu_ms_per_request": round(1000 * cpu / n, 3),
                         "apiserver_cpu_seconds": round(
                             proc_cpu_seconds(apiserver_pid) - api0, 2)}
        return result

    await phase("create", lambda: bounded(concurrency, (create(k) for k in names)))
    await phase("patch", lambda: bounded(concurrency, (patch(k) for k in names)))
    found = await phase("get", lambda: bounded(concurrency,
                                               (get(i, k) for i, k in enumerate(names))))
    phases["get"]["found"] = sum(1 for f in found if f)
    seen = await phase("watch", lambda: impl.watch_secrets(namespace, name, n))
    phases["watch"]["events"] = seen
    rss_used = rss_mb()
    await impl.close()
    total_cpu = sum(p["cpu_seconds"] for p in phases.values())
    total_requests = sum(p["requests"] for p in phases.values())
    return {
        "client": name, "version": metadata.version(DISTRIBUTIONS[name]), "n": n,
        "concurrency": concurrency, "phases": phases,
        "cpu_seconds": round(total_cpu, 3),
        "cpu_ms_per_request": round(1000 * total_cpu / total_requests, 3),
        "wall_seconds": round(sum(p["wall_seconds"] for p in phases.values()), 3),
        "import_seconds": import_seconds,
        "rss_start_mb": round(rss_start, 1), "rss_after_import_mb": round(rss_imported, 1),
        "rss_after_use_mb": round(rss_used, 1),
        "rss_import_added_mb": round(rss_imported - rss_start, 1),
        "rss_added_mb": round(rss_used - rss_start, 1),
    }


# --- the driver ----------------------------------------------------------------------------

async def _setup_apikeys(server: str, ca: str, token: str, namespace: str, n: int
                         ) -> dict[str, str]:
    """N ApiKeys to patch the status of (the driver's cost, not a candidate's): name -> uid."""
    import aiohttp

    context = ssl.create_default_context(cadata=ca)
    uids: dict[str, str] = {}
    async with aiohttp.ClientSession(
            base_url=server, headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(ssl=context, limit=16)) as session:

        async def create(index: int) -> None:
            name = f"key-{index:05d}"
            async with session.post(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}",
                                    json=apikey_body(namespace, name)) as response:
                body = await response.json()
                if response.status >= 400:
                    raise RuntimeError(f"creating ApiKey {name}: {body}")
                uids[name] = body["metadata"]["uid"]

        await bounded(16, (lambda i=i: create(i) for i in range(n)))
    return uids


def run_one(plane: Any, name: str, n: int, tag: str, concurrency: int,
            workdir: pathlib.Path) -> dict[str, Any]:
    namespace = f"hc-{name.replace('_', '-')}-{n}-{tag}"
    plane.api.ensure_namespace(namespace)
    server, ca, token = read_kubeconfig(plane.kubeconfig)
    uids = asyncio.run(_setup_apikeys(server, ca, token, namespace, n))
    uids_file = workdir / f"{namespace}.json"
    uids_file.write_text(json.dumps(uids))
    apiserver = next(c for c in plane.children if c.name == "kube-apiserver")
    load = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, "-m", "bench.http_clients", "--worker", name,
         "--kubeconfig", str(plane.kubeconfig), "--namespace", namespace,
         "--uids", str(uids_file), "--concurrency", str(concurrency),
         "--apiserver-pid", str(apiserver.proc.pid)],
        cwd=REPO, capture_output=True, text=True, timeout=1800, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    if out.returncode != 0:
        raise RuntimeError(f"{name} at N={n} failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    return result


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (N, client): the median over repeats of each figure."""
    rows = []
    keys = sorted({(r["n"], r["client"]) for r in runs}, key=lambda k: (k[0], CLIENTS.index(k[1])))
    for n, client in keys:
        mine = [r for r in runs if r["n"] == n and r["client"] == client]
        row: dict[str, Any] = {"n": n, "client": client, "version": mine[0]["version"],
                               "runs": len(mine)}
        for phase in PHASES:
            row[f"{phase}_cpu_ms"] = round(_median(
                [r["phases"][phase]["cpu_ms_per_request"] for r in mine]), 3)
            row[f"{phase}_wall_s"] = round(_median(
                [r["phases"][phase]["wall_seconds"] for r in mine]), 2)
        for key in ("cpu_ms_per_request", "cpu_seconds", "wall_seconds", "rss_import_added_mb",
                    "rss_added_mb"):
            row[key] = round(_median([r[key] for r in mine]), 3)
        row["apiserver_cpu_seconds"] = round(_median(
            [sum(p["apiserver_cpu_seconds"] for p in r["phases"].values()) for r in mine]), 2)
        row["load_average"] = "/".join(f"{r['load_average'][0]:g}" for r in mine)
        rows.append(row)
    return rows


def markdown(results: Mapping[str, Any]) -> str:
    rows = results["summary"]
    header = ["N", "client", "CPU ms/request (all)", "create", "patch", "get", "watch (per event)",
              "wall s (4 phases)", "RSS added by import MB", "RSS added by import+use MB",
              "kube-apiserver CPU s", "load (1 min)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v) for v in (
            row["n"], f"{row['client']} {row['version']}", row["cpu_ms_per_request"],
            row["create_cpu_ms"], row["patch_cpu_ms"], row["get_cpu_ms"], row["watch_cpu_ms"],
            row["wall_seconds"], row["rss_import_added_mb"], row["rss_added_mb"],
            row["apiserver_cpu_seconds"], row["load_average"])) + " |")
    wall = ["| N | client | create s | patch s | get s | watch s |", "|---|---|---|---|---|---|"]
    for row in rows:
        wall.append(f"| {row['n']} | {row['client']} | " + " | ".join(
            _fmt(row[f"{p}_wall_s"]) for p in PHASES) + " |")
    m = results["machine"]
    parts = [
        "# HTTP clients for the operator (issue 17)\n",
        f"Generated {results['generated_at']} by `python -m bench.http_clients "
        f"{' '.join(results['argv'])}`".rstrip() + f" against kube-apiserver "
        f"{results['kube_apiserver']} on {m['cpus']} CPUs ({m['cpu_model']}), Python "
        f"{m['python']}; {results['repeat']} run(s) per client and size, in rotated order, "
        f"the median shown; {results['concurrency']} requests in flight. Each client runs in "
        "a process of its own against one fresh control plane: N Secret creates, N ApiKey "
        "status JSON patches, N Secret GETs (half 404) and a label-selected watch delivering "
        "N events. CPU is the client process's (user + system, every thread) per request; "
        "RSS is what the import, then the import and the workload, added to a process "
        "that already had Python, asyncio, json, ssl and yaml loaded. The kube-apiserver's "
        "CPU over the same four phases shows what the server spent on the same requests.\n",
        "\n".join(lines) + "\n",
        "Wall time per phase (seconds; the machine is shared, so these move with its load "
        "more than the CPU figures do):\n",
        "\n".join(wall) + "\n",
    ]
    notes = HERE / "HTTP_CLIENTS_NOTES.md"
    if notes.exists():
        parts += ["## Analysis and recommendation\n", notes.read_text().strip() + "\n"]
    return "\n".join(parts)


def drive(args: argparse.Namespace, argv: list[str]) -> int:
    from apikey_operator.testing.controlplane import ControlPlane
    from bench.report import machine

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    clients = [c for c in args.clients.split(",") if c]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="apikey-http-clients-") as tmp:
        workdir = pathlib.Path(tmp)
        # No controller manager: nothing in the workload needs one, and it would cost CPU.
        with ControlPlane(controller_manager=False, workdir=workdir / "plane") as plane:
            for rep in range(args.repeat):
                for n in sizes:
                    # Rotate the order per repeat: no client always runs first on a cold server.
                    order = clients[rep % len(clients):] + clients[:rep % len(clients)]
                    for name in order:
                        result = run_one(plane, name, n, str(rep), args.concurrency, workdir)
                        runs.append(result)
                        print(f"[{time.strftime('%H:%M:%S')}] N={n} {name}: "
                              f"{result['cpu_ms_per_request']} ms CPU/request, "
                              f"{result['wall_seconds']} s, +{result['rss_added_mb']} MB RSS",
                              flush=True)
            version = plane.git_version
    results = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": argv, "kube_apiserver": version, "machine": machine(),
        "concurrency": args.concurrency, "repeat": args.repeat,
        "summary": summarise(runs), "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "http_clients.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (args.out / "HTTP_CLIENTS.md").write_text(text)
    print(text.split("Wall time per phase")[0])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.http_clients",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000", help="comma-separated N (default 1000)")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=pathlib.Path, default=HERE)
    parser.add_argument("--render", action="store_true",
                        help="only rewrite HTTP_CLIENTS.md from http_clients.json in --out")
    # The child process's side.
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--kubeconfig", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    parser.add_argument("--uids", type=pathlib.Path, help=argparse.SUPPRESS)
    parser.add_argument("--apiserver-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        uids = json.loads(args.uids.read_text())
        result = asyncio.run(work(args.worker, args.kubeconfig, args.namespace, uids,
                                  args.concurrency, args.apiserver_pid))
        print(json.dumps(result))
        return 0
    if args.render:
        results = json.loads((args.out / "http_clients.json").read_text())
        (args.out / "HTTP_CLIENTS.md").write_text(markdown(results))
        return 0
    return drive(args, argv)


if __name__ == "__main__":
    sys.exit(main())
