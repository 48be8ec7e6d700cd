"""The benchmark driver's view of the API: writes, and watch-fed caches of ApiKeys and Secrets.

The driver is one more API client: it talks to the kube-apiserver directly (bearer token
and the control plane's CA), not through the counting proxy the process under test uses, so
its requests are never in the operator's figures (its User-Agent ``apikey-bench`` would keep
them out if it went through the proxy). Times are taken when a watch event arrives, with
the driver's monotonic clock, so a latency is "from the request we sent to the event that
showed the result".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from bench.cluster_main import BENCH_AGENT

APIKEYS_PATH = "/apis/apikeys.dev/v1alpha1"
POLICIES_URL = "/apis/apikeys.dev/v1alpha1/rotationpolicies"
MERGE = "application/merge-patch+json"
Body = dict[str, Any]


def is_ready(body: Mapping[str, Any]) -> bool:
    """Ready=True for the object's current generation (kstatus semantics)."""
    meta = body.get("metadata") or {}
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True"
                        and cond.get("observedGeneration") == meta.get("generation"))
    return False


def key_version(body: Mapping[str, Any]) -> int:
    """status.currentKey.version, 0 before the first key."""
    return int(((body.get("status") or {}).get("currentKey") or {}).get("version") or 0)


class Api:
    """Plain REST calls to the kube-apiserver with the driver's User-Agent and credentials
    (``token`` as a bearer token; TLS verified against ``ca_file``)."""

    def __init__(self, url: str, *, token: str | None = None,
                 ca_file: str | os.PathLike[str] | None = None, concurrency: int = 32) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": f"{BENCH_AGENT}/1", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        tls: ssl.SSLContext | bool = True
        if ca_file is not None:
            tls = ssl.create_default_context(cafile=os.fspath(ca_file))
        self.session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=concurrency, ssl=tls),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def close(self) -> None:
        await self.session.close()

    async def _check(self, response: aiohttp.ClientResponse, what: str) -> Body:
        text = await response.text()
        if response.status >= 300:
            raise RuntimeError(f"{what}: HTTP {response.status}: {text[:300]}")
        data: Body = json.loads(text)
        return data

    async def create(self, path: str, body: Mapping[str, Any]) -> Body:
        async with self.session.post(self.url + path, json=dict(body)) as response:
            return await self._check(response, f"POST {path}")

    async def patch(self, path: str, patch: Mapping[str, Any]) -> Body:
        async with self.session.patch(self.url + path, data=json.dumps(patch),
                                      headers={"Content-Type": MERGE}) as response:
            return await self._check(response, f"PATCH {path}")

    async def get(self, path: str) -> Body:
        async with self.session.get(self.url + path) as response:
            return await self._check(response, f"GET {path}")

    def apikey_path(self, namespace: str, name: str | None = None) -> str:
        base = f"{APIKEYS_PATH}/namespaces/{namespace}/apikeys"
        return f"{base}/{name}" if name else base


class WatchedCollection:
    """A list + watch of one collection URL, kept as ``objects`` by (namespace, name).

    ``on_change`` runs on the loop after every event with the key and the new body
    (None when deleted).
    """

    def __init__(self, api: Api, path: str,
                 on_change: Callable[[tuple[str, str], Body | None], None]) -> None:
        self.api = api
        self.path = path
        self.on_change = on_change
        self.objects: dict[tuple[str, str], Body] = {}
        self._task: asyncio.Task[None] | None = None
        self._synced = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self._synced.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _list(self) -> str:
        """(Re)list the collection: apply what is there, drop what is gone; its version."""
        listing = await self.api.get(self.path)
        seen = set()
        for item in listing.get("items") or []:
            meta = item.get("metadata") or {}
            seen.add((str(meta.get("namespace") or ""), str(meta.get("name"))))
            self._apply("MODIFIED", item)
        for key in [k for k in self.objects if k not in seen]:
            self._apply("DELETED", self.objects[key])
        return str(listing["metadata"].get("resourceVersion", ""))

    async def _run(self) -> None:
        version = await self._list()
        self._synced.set()
        while True:
            url = (f"{self.api.url}{self.path}?watch=true&timeoutSeconds=3600"
                   f"&allowWatchBookmarks=true&resourceVersion={version}")
            try:
                async with self.api.session.get(url) as response:
                    if response.status != 200:
                        raise RuntimeError(f"watch {self.path}: HTTP {response.status}")
                    async for line in response.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        body = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            if body.get("code") == 410:  # too old: list again, watch on
                                version = await self._list()
                                break
                            raise RuntimeError(f"watch {self.path}: {body}")
                        version = str(body["metadata"].get("resourceVersion", version))
                        if event.get("type") != "BOOKMARK":
                            self._apply(str(event["type"]), body)
            except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                await asyncio.sleep(0.1)

    def _apply(self, kind: str, body: Body) -> None:
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name")))
        if kind == "DELETED":
            self.objects.pop(key, None)
            self.on_change(key, None)
        else:
            self.objects[key] = body
            self.on_change(key, body)


class Observer:
    """Watches ApiKeys in one namespace and all Secrets; records when each ApiKey got Ready.

    ``listeners`` get every event as (``"apikey"`` or ``"secret"``, (namespace, name), body
    or None) and must do O(1) work: a scenario tracks its keys incrementally there. Checks
    passed to :meth:`until` are re-evaluated after each event, so they must be cheap too.
    """

    def __init__(self, api: Api, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.ready_at: dict[str, float] = {}
        self._checks: list[Callable[[], bool]] = []
        self.listeners: list[Callable[[str, tuple[str, str], Body | None], None]] = []
        self.apikeys = WatchedCollection(api, api.apikey_path(namespace), self._apikey_changed)
        self.secrets = WatchedCollection(api, "/api/v1/secrets", self._secret_changed)

    async def start(self) -> None:
        await self.apikeys.start()
        await self.secrets.start()

    async def stop(self) -> None:
        await self.apikeys.stop()
        await self.secrets.stop()

    def apikey(self, name: str) -> Body | None:
        return self.apikeys.objects.get((self.namespace, name))

    def secret(self, namespace: str, name: str) -> Body | None:
        return self.secrets.objects.get((namespace, name))

    def _apikey_changed(self, key: tuple[str, str], body: Body | None) -> None:
        if body is not None and key[1] not in self.ready_at and is_ready(body):
            self.ready_at[key[1]] = time.monotonic()
        for listener in self.listeners:
            listener("apikey", key, body)
        self._recheck()

    def _secret_changed(self, key: tuple[str, str], body: Body | None) -> None:
        for listener in self.listeners:
            listener("secret", key, body)
        self._recheck()

    def _recheck(self) -> None:
        if self._checks:
            self._checks = [check for check in self._checks if not check()]

    async def until(self, check: Callable[[], bool], within: float, what: str) -> None:
        """Wait until ``check()`` holds (re-checked on every watch event and every second)."""
        if check():
            return
        done = asyncio.Event()

        def wrapped() -> bool:
            if check():
                done.set()
                return True
            return False

        self._checks.append(wrapped)
        deadline = time.monotonic() + within
        while not done.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {within:.0f}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 1.0)
            if not done.is_set() and wrapped():
                self._checks.remove(wrapped)
