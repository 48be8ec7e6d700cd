"""A fault-injecting, request-counting HTTPS proxy in front of a real kube-apiserver.

One proxy per client under test (the operator, a benchmark run): every request it forwards is
recorded in a :class:`Traffic` log with its Kubernetes verb and resource, and the fault rules
of that log (a delay, an error status such as 409, 429 with ``Retry-After`` or 500, for the
next N matching requests) are applied before the request reaches the server. Watch streams are
forwarded line by line and can be cut (`cut_watches`), as a load balancer or an apiserver
restart would. The proxy presents the control plane's serving certificate, so a client keeps
verifying TLS with the same CA; credentials pass through untouched, so RBAC applies as-is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

import aiohttp
import aiohttp.web

from apikey_operator.testing.kube_traffic import Traffic, reason_for

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones aiohttp recomputes. Content-Encoding passes
# through with the body as it came (no decompression here): kube-apiserver gzips large lists
# for clients that accept it, and those clients must see the header to decode them.
_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                  "trailer", "transfer-encoding", "upgrade", "host", "content-length"})


@dataclass(frozen=True, slots=True)
class Route:
    """What a request path names, in the terms faults and counts use."""

    verb: str
    group: str | None = None
    version: str | None = None
    resource: str | None = None
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None


def route_of(method: str, path: str, query: Mapping[str, str]) -> Route:
    """The Kubernetes verb and resource of a request (``discovery`` for /api, /apis, /openapi,
    ``other`` for health and version endpoints)."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        verb = "discovery" if parts and parts[0] in ("openapi", "version") else "other"
        return Route(verb)
    if parts[0] == "api":
        group, rest = "", parts[1:]
    else:
        group, rest = (parts[1] if len(parts) > 1 else ""), parts[2:]
    if not rest:
        return Route("discovery", group=group)
    version, rest = rest[0], rest[1:]
    if not rest:
        return Route("discovery", group=group, version=version)
    namespace: str | None = None
    # /api/v1/namespaces/NAME[/status|/finalize] is the Namespace resource itself.
    if rest[0] == "namespaces" and len(rest) >= 3 and not (
            group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else ("get" if name else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(method, "other")
    return Route(verb, group=group, version=version, resource=plural, subresource=subresource,
                 namespace=namespace, name=name)


def _bound_port(site: aiohttp.web.TCPSite) -> int:
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    return int(sockets[0].getsockname()[1])


class ApiProxy:
    """Forwards HTTPS requests to `upstream` from a free loopback port, in a thread of its own.

    `url` is set once started; `traffic` counts and disturbs what passes. `cert_file` and
    `key_file` are the serving certificate (the control plane's), `ca_file` verifies upstream.
    """

    def __init__(self, upstream: str, *, ca_file: str | os.PathLike[str],
                 cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str],
                 traffic: Traffic | None = None, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.traffic = traffic if traffic is not None else Traffic()
        self._ca_file = str(ca_file)
        self._cert_file, self._key_file = str(cert_file), str(key_file)
        self._port = port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        # One event per open watch stream (set it to cut the stream), with its resource.
        self._watch_resources: dict[asyncio.Event, str | None] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        self._thread = threading.Thread(target=self._run, name="kube-proxy", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._failure is not None:
            raise RuntimeError(f"the API proxy did not start: {self._failure!r}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is None or stop is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start()
            self._failure = exc
            self._started.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ssl.load_cert_chain(self._cert_file, self._key_file)
        client_ssl = ssl.create_default_context(cafile=self._ca_file)
        connector = aiohttp.TCPConnector(ssl=client_ssl, limit=0)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              timeout=aiohttp.ClientTimeout(total=None))
        app = aiohttp.web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None,
                                       shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", self._port, ssl_context=server_ssl)
        await site.start()
        port = _bound_port(site)
        self.url = f"https://127.0.0.1:{port}"
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            for event in list(self._watch_resources):
                event.set()
            await runner.cleanup()
            await self._session.close()

    # --- control from other threads ----------------------------------------------------------

    def cut_watches(self, resource: str | None = None) -> int:
        """End the open watch streams (of `resource` if given, a plural); returns how many."""
        loop = self._loop
        if loop is None:
            return 0
        events = [e for e, r in list(self._watch_resources.items())
                  if resource is None or r == resource]
        for event in events:
            loop.call_soon_threadsafe(event.set)
        return len(events)

    @property
    def open_watches(self) -> int:
        return len(self._watch_resources)

    # --- forwarding --------------------------------------------------------------------------

    async def _handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        route = route_of(request.method, request.path, request.query)
        record = self.traffic.record(request.method, request.path, **asdict(route))
        fault = self.traffic.take_fault(record)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                record.status = fault.status
                if route.verb == "watch":
                    return await self._fault_watch(request, fault.status, fault.message)
                return self._fault_response(fault.status, fault.message, fault.retry_after)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        try:
            upstream = await self._session.request(
                request.method, self.upstream + request.path_qs, data=body or None,
                headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, OSError) as exc:
            record.status = 503
            return self._fault_response(503, f"proxy: upstream unreachable: {exc}", None)
        record.status = upstream.status
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
        if route.verb != "watch":
            async with upstream:
                payload = await upstream.read()
            return aiohttp.web.Response(status=upstream.status, body=payload,
                                        headers=out_headers)
        return await self._stream(request, upstream, out_headers, route.resource)

    async def _stream(self, request: aiohttp.web.Request, upstream: aiohttp.ClientResponse,
                      headers: Mapping[str, str], resource: str | None,
                      ) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        cut = asyncio.Event()
        self._watch_resources[cut] = resource
        reader = asyncio.ensure_future(self._pump(upstream, response))
        waiter = asyncio.ensure_future(cut.wait())
        try:
            await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, waiter):
                task.cancel()
            with contextlib.suppress(BaseException):
                await reader
            upstream.close()
            self._watch_resources.pop(cut, None)
        if cut.is_set():
            # A cut stream ends abruptly, without the final chunk, as a dropped connection does.
            if request.transport is not None:
                request.transport.close()
            return response
        with contextlib.suppress(ConnectionError, RuntimeError):
            await response.write_eof()
        return response

    @staticmethod
    async def _pump(upstream: aiohttp.ClientResponse,
                    response: aiohttp.web.StreamResponse) -> None:
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, asyncio.IncompleteReadError):
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)

    @staticmethod
    def _status_body(code: int, message: str | None) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message or f"injected fault: HTTP {code}",
                "reason": reason_for(code), "code": code}

    def _fault_response(self, code: int, message: str | None,
                        retry_after: int | None) -> aiohttp.web.Response:
        status = self._status_body(code, message)
        if retry_after is not None:
            status["details"] = {"retryAfterSeconds": retry_after}
        response = aiohttp.web.Response(status=code, body=json.dumps(status).encode(),
                                        content_type="application/json")
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    async def _fault_watch(self, request: aiohttp.web.Request, code: int,
                           message: str | None) -> aiohttp.web.StreamResponse:
        """A watch failure as the server sends one: an ERROR event in a 200 stream (e.g. 410
        Expired when the resourceVersion is too old)."""
        response = aiohttp.web.StreamResponse(status=200)
        response.content_type = "application/json"
        await response.prepare(request)
        event = {"type": "ERROR", "object": self._status_body(code, message)}
        await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response
