"""The only module besides kopf that talks to the Kubernetes API.

Thin async calls over aiohttp (kopf's own HTTP stack, so it costs the operator no memory
and about a third of lightkube's CPU per request: see the README), returning plain dicts,
and one error mapping: conflicts, throttling, server errors and broken connections become
`KubeTransient` (the caller backs off and re-plans), anything else stays a `KubeError`.
Request and response bodies hold keys: they are never logged (no aiohttp tracing here).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import os
import ssl
import subprocess
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import kopf
import yaml

from apikey_operator import __version__
from apikey_operator.spec import GROUP, VERSION

FIELD_MANAGER = "apikey-operator"
# The bench tells the operator's own requests from kopf's ("kopf/...") by this.
USER_AGENT = f"apikey-operator/{__version__}"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Each open TLS connection costs the client about 0.3 MB (measured: 100 connections 32 MB,
# 32 connections 11 MB, 20 connections 8 MB, against a local TLS server); 32 requests in flight
# are more than a 2-core kube-apiserver serves at once. Watches have connections of their own.
CONNECTION_LIMIT = 32
WATCH_SECONDS = 300  # the server ends each watch after this; it is re-opened where it stopped
_APIKEYS = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/apikeys"
_POLICIES = f"/apis/{GROUP}/{VERSION}/rotationpolicies"
_WORKLOADS = {"Deployment": "deployments", "StatefulSet": "statefulsets",
              "DaemonSet": "daemonsets"}
_JSON_PATCH = "application/json-patch+json"
_MERGE_PATCH = "application/merge-patch+json"
logger = logging.getLogger(__name__)
ConnectionInfo = kopf.ConnectionInfo


class KubeError(Exception):
    """A Kubernetes API call failed for a reason retries will not fix."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class KubeStale(KubeError):
    """A write conditional on a resourceVersion found the object changed since; `current` is
    the object as read to tell that (so the caller need not read it again)."""

    def __init__(self, message: str, status: int = 0,
                 current: dict[str, Any] | None = None) -> None:
        super().__init__(message, status)
        self.current = current


class KubeTransient(KubeError):
    """Conflict (409), throttling (429), server errors (5xx) or a broken connection."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class _InvalidAnswer(aiohttp.ClientError):
    """A 2xx answer (or a watch line) that is not JSON."""


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise _InvalidAnswer("not JSON") from None


class _ApiStatus(Exception):
    """A non-2xx answer: the HTTP status and the server's Status object (or {})."""

    def __init__(self, code: int, status: Mapping[str, Any], reason: str,
                 retry_after: str | None) -> None:
        super().__init__(code)
        self.code = code
        self.status = status
        self.reason = str(status.get("reason") or reason or "")
        self.retry_after = retry_after


def _transport_name(exc: BaseException) -> str:
    """A connection failure's short name, the same whatever the HTTP library's class names."""
    if isinstance(exc, aiohttp.ClientSSLError):
        reason = getattr(getattr(exc, "os_error", None), "reason", None)
        return f"ConnectError (TLS: {reason})" if reason else "ConnectError (TLS)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "ConnectError"
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp's ServerTimeoutError too
        return "Timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "ServerDisconnected"
    if isinstance(exc, _InvalidAnswer):
        return "InvalidResponse"
    return type(exc).__name__


def _map_error(exc: BaseException, what: str) -> KubeError:
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, _ApiStatus):
        status, reason = exc.code, exc.reason
        if status in (409, 429) or status >= 500:
            retry_after = None
            details = exc.status.get("details")
            seconds = details.get("retryAfterSeconds") if isinstance(details, Mapping) else None
            if seconds:
                retry_after = float(seconds)
            elif exc.retry_after and exc.retry_after.isdigit():
                retry_after = float(exc.retry_after)
            return KubeTransient(f"{what}: {status} {reason}", status, retry_after)
        message = exc.status.get("message")
        if status == 403 and message:
            # The server's own words name the verb, resource and identity that were refused.
            return KubeError(f"{what}: {status} {reason}: {message}", status)
        return KubeError(f"{what}: {status} {reason}", status)
    return KubeTransient(f"{what}: {_transport_name(exc)}")


# What a request can fail with besides an HTTP status: each becomes a KubeTransient.
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)


def decode_data(data: Mapping[str, str] | None) -> dict[str, str]:
    """A Secret's base64 data as text; undecodable entries are kept as '' (never raised)."""
    result: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            result[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, TypeError):
            result[key] = ""
    return result


def encode_data(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}


def _q(name: str) -> str:
    return quote(name, safe="")


def _secrets(namespace: str | None) -> str:
    return f"/api/v1/namespaces/{_q(namespace)}/secrets" if namespace else "/api/v1/secrets"


def _apikeys(namespace: str | None) -> str:
    return (_APIKEYS.format(namespace=_q(namespace)) if namespace
            else f"/apis/{GROUP}/{VERSION}/apikeys")


def _selector(equal: Mapping[str, str], absent: tuple[str, ...] = ()) -> str:
    return ",".join([f"{k}={v}" for k, v in equal.items()] + [f"!{k}" for k in absent])


class KubeClient:
    """One shared connection pool to the API server for the operator's own calls.

    Without a target it logs in like kopf does (kopf's own loaders: the in-cluster service
    account, else KUBECONFIG / ~/.kube/config), so both talk to the same server. The
    aiohttp session is made on first use, on the loop that uses it (the operator builds its
    client before kopf starts the loop), and made again if a later call runs on another loop.
    """

    def __init__(self, target: ClientTarget | None = None, timeout: float = 15.0) -> None:
        self._target = target
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool = False
        self._server = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._headers: dict[str, str] = {}

    def _connection(self) -> ConnectionInfo:
        return self._target.config if self._target is not None else _default_login()

    def _reload(self) -> ConnectionInfo:
        """Credentials read again (a rotated service-account token, a refreshed kubeconfig)."""
        if self._target is None:
            return _default_login()
        if self._target.source == "in-cluster":
            return _in_cluster().config
        return _from_kubeconfig(self._target.source, self._target.context).config

    def _open(self, info: ConnectionInfo) -> aiohttp.ClientSession:
        self._server = info.server.rstrip("/")
        self._headers = {"User-Agent": USER_AGENT, "Accept": "application/json",
                         **info.as_http_headers()}
        # kopf's ConnectionInfo builds the context: CA (file or data), client certificate and
        # key (data goes through a private temporary file that is deleted once loaded).
        self._ssl = info.as_ssl_context() if self._server.startswith("https:") else False
        connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, ssl=self._ssl)
        timeout = aiohttp.ClientTimeout(total=None, connect=self._timeout,
                                        sock_connect=self._timeout, sock_read=self._timeout)
        return aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     trust_env=info.trust_env, raise_for_status=False)

    def _session_now(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # A session made on an earlier loop cannot be closed from this one: dropped.
            self._session = self._open(self._connection())
            self._watch_session = None
            self._loop = loop
        return self._session

    def _watch_session_now(self) -> aiohttp.ClientSession:
        """A pool of its own for the long-lived watches (one connection each), so that they
        never hold the request pool's connections, however many namespaces are watched."""
        session = self._session_now()
        if self._watch_session is None or self._watch_session.closed:
            self._watch_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl),
                trust_env=session.trust_env, raise_for_status=False)
        return self._watch_session

    async def close(self) -> None:
        sessions = (self._session, self._watch_session)
        self._session = self._watch_session = None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for session in sessions:
            if session is not None and not session.closed and running is self._loop:
                await session.close()

    async def _request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                       body: Any = None, content_type: str = "application/json",
                       write: bool = False) -> dict[str, Any]:
        """One API call: the decoded answer, or _ApiStatus for a non-2xx one. A 401 reads
        the credentials again and tries once more (kopf re-logs in the same way)."""
        query = dict(params or {})
        if write:
            query["fieldManager"] = FIELD_MANAGER
        data = None if body is None else json.dumps(body).encode("utf-8")
        for attempt in (1, 2):
            session = self._session_now()
            headers = dict(self._headers)
            if data is not None:
                headers["Content-Type"] = content_type
            async with session.request(method, self._server + path, params=query, data=data,
                                       headers=headers) as response:
                raw = await response.read()
                if response.status < 300:
                    return dict(_json(raw)) if raw else {}
                if response.status == 401 and attempt == 1 and await self._relogin():
                    continue
                raise _status_of(response, raw)
        raise AssertionError("unreachable")

    async def _relogin(self) -> bool:
        """New credentials when they differ from the ones in use; False otherwise."""
        try:
            info = self._reload()
        except (KubeError, OSError, ValueError):
            return False
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json",
                   **info.as_http_headers()}
        if headers == self._headers:
            return False
        self._headers = headers
        return True

    async def _call(self, what: str, method: str, path: str, *, missing_ok: bool = False,
                    **kwargs: Any) -> dict[str, Any] | None:
        """A request with the one error mapping; None for a 404 when `missing_ok`."""
        try:
            return await self._request(method, path, **kwargs)
        except _ApiStatus as exc:
            if missing_ok and exc.code == 404:
                return None
            raise _map_error(exc, what) from None
        except _TRANSPORT_ERRORS as exc:
            raise _map_error(exc, what) from None

    async def _must(self, what: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        result = await self._call(what, method, path, **kwargs)
        assert result is not None
        return result

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(f"reading Secret {namespace}/{name}", "GET",
                                f"{_secrets(namespace)}/{_q(name)}", missing_ok=True)

    async def create_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return await self._must(f"creating Secret {meta['namespace']}/{meta['name']}", "POST",
                                _secrets(meta["namespace"]), body=dict(body), write=True)

    async def replace_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion: a concurrent change gives KubeTransient (409)."""
        meta = body["metadata"]
        return await self._must(f"updating Secret {meta['namespace']}/{meta['name']}", "PUT",
                                f"{_secrets(meta['namespace'])}/{_q(meta['name'])}",
                                body=dict(body), write=True)

    async def watch_secrets(self, namespace: str | None, equal: Mapping[str, str],
                            absent: tuple[str, ...] = (),
                            ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event type, Secret) for every Secret whose labels are `equal` and lack `absent`
        (a server-side label selector: the API server never sends us anyone else's
        Secrets, whatever their number or size), in `namespace` or all of them, forever:
        every existing one first, then each change.

        Each watch ends after WATCH_SECONDS or when the connection breaks; the next one
        starts at the last resourceVersion seen (bookmarks keep it fresh), so nothing is
        sent twice. When the server no longer has that version (410 Gone) the watch
        starts over with every existing Secret, which is a relist (a Secret deleted in the
        gap is not reported; a stale entry is harmless: writes are conditional on
        resourceVersion). A broken stream is re-opened after a pause that doubles to 30 s.
        """
        pause = 1.0
        version: str | None = None
        where = f" in {namespace}" if namespace else ""
        path = _secrets(namespace)
        while True:
            params = {"watch": "true", "labelSelector": _selector(equal, absent),
                      "timeoutSeconds": str(WATCH_SECONDS), "allowWatchBookmarks": "true"}
            if version:
                params["resourceVersion"] = version
            try:
                async with contextlib.aclosing(self._watch(path, params)) as events:
                    async for type_, obj in events:
                        if type_ == "ERROR":
                            if obj.get("code") == 410:
                                version = None  # too old: start over with what exists now
                                break
                            raise _ApiStatus(int(obj.get("code") or 500), obj, "", None)
                        version = str((obj.get("metadata") or {}).get("resourceVersion")
                                      or version or "") or None
                        if type_ == "BOOKMARK":
                            continue
                        pause = 1.0
                        yield type_, obj
            except _ApiStatus as exc:
                if exc.code == 410:
                    version = None
                    continue
                self._watch_failed(where, _map_error(exc, "watch"), pause)
            except _TRANSPORT_ERRORS as exc:
                self._watch_failed(where, _map_error(exc, "watch"), pause)
            else:
                continue  # the server ended the watch: the next one starts at once
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)

    @staticmethod
    def _watch_failed(where: str, error: KubeError, pause: float) -> None:
        logger.warning("watching Secrets%s: %s; again in %.0fs", where, error, pause)

    async def _watch(self, path: str, params: Mapping[str, str],
                     ) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """One watch stream's events, until the server ends it."""
        session = self._watch_session_now()
        # No read timeout beyond the server's own end of the watch (with a margin).
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout,
                                        sock_read=WATCH_SECONDS + 30)
        async with session.get(self._server + path, params=params, headers=self._headers,
                               timeout=timeout) as response:
            if response.status >= 300:
                raw = await response.read()
                if response.status == 401:
                    await self._relogin()
                raise _status_of(response, raw)
            pending = b""
            # Lines of any length: a Secret can be 1 MiB, beyond aiohttp's readline limit.
            async for chunk in response.content.iter_any():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        event = _json(line)
                        yield str(event.get("type")), event.get("object") or {}

    async def delete_secret(self, namespace: str, name: str) -> None:
        await self._call(f"deleting Secret {namespace}/{name}", "DELETE",
                         f"{_secrets(namespace)}/{_q(name)}", missing_ok=True)

    async def patch_apikey_status(self, namespace: str, name: str, status: Mapping[str, Any],
                                  *, uid: str, has_status: bool,
                                  resource_version: str | None = None) -> str:
        """Set the given status fields (None removes one) on the ApiKey with this uid only
        (and, with `resource_version`, only if the object is still at that version: KubeStale
        otherwise).

        A JSON patch whose first operation tests ``metadata.uid``: an ApiKey deleted and created
        again under the same name is another object, and a late write meant for the old one must
        fail (422) rather than land on it. A merge patch cannot carry that precondition (the
        status subresource ignores metadata). `has_status` says whether the object already has
        a status to add fields to. Returns the resourceVersion the write made.
        """
        ops = status_patch(status, uid, has_status)
        if resource_version:
            ops.insert(1, {"op": "test", "path": "/metadata/resourceVersion",
                           "value": resource_version})
        what = f"updating status of ApiKey {namespace}/{name}"
        try:
            obj = await self._request("PATCH", f"{_apikeys(namespace)}/{_q(name)}/status",
                                      body=ops, content_type=_JSON_PATCH, write=True)
        except _ApiStatus as exc:
            if exc.code == 422 and resource_version:
                # A failed JSON-patch test names neither test: look whether the object is
                # still ours (then it only moved on) or another one (then ours is gone).
                current = await self.get_apikey(namespace, name)
                meta = (current or {}).get("metadata") or {}
                if meta.get("uid") == uid and meta.get("resourceVersion") != resource_version:
                    raise KubeStale(f"{what}: the object changed meanwhile", 422,
                                    current=current) from None
            raise _map_error(exc, what) from None
        except _TRANSPORT_ERRORS as exc:
            raise _map_error(exc, what) from None
        return str((obj.get("metadata") or {}).get("resourceVersion", ""))

    async def patch_policy_status(self, name: str, status: Mapping[str, Any], *, uid: str,
                                  has_status: bool) -> None:
        """Set the given status fields on the RotationPolicy with this uid only (as for an
        ApiKey: a policy created again under the same name is another object)."""
        await self._call(f"updating status of RotationPolicy {name}", "PATCH",
                         f"{_POLICIES}/{_q(name)}/status",
                         body=status_patch(status, uid, has_status), content_type=_JSON_PATCH,
                         write=True)

    async def patch_apikey_annotations(self, namespace: str, name: str,
                                       annotations: Mapping[str, str | None]) -> None:
        await self._call(f"annotating ApiKey {namespace}/{name}", "PATCH",
                         f"{_apikeys(namespace)}/{_q(name)}",
                         body={"metadata": {"annotations": dict(annotations)}},
                         content_type=_MERGE_PATCH, write=True)

    async def get_apikey(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._call(f"reading ApiKey {namespace}/{name}", "GET",
                                f"{_apikeys(namespace)}/{_q(name)}", missing_ok=True)

    async def list_apikeys(self, namespace: str | None = None,
                           selector: str | None = None) -> list[dict[str, Any]]:
        """Every ApiKey (in `namespace`, or all), optionally matching a kubectl label selector."""
        return await self._list(_apikeys(namespace), "listing ApiKeys", selector=selector)

    async def any_apikeys(self, namespace: str | None = None) -> bool:
        """Whether an ApiKey exists (in `namespace`, or anywhere): one item is read, not all."""
        page = await self._must("listing ApiKeys", "GET", _apikeys(namespace),
                                params={"limit": "1"})
        return bool(page.get("items"))

    async def _list(self, path: str, what: str, *, selector: str | None = None,
                    fields: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every item, read in pages of 500 (a list of every Secret can be large)."""
        params = {"limit": "500"}
        if selector:
            params["labelSelector"] = selector  # a kubectl-style selector, passed through
        if fields:
            params["fieldSelector"] = ",".join(f"{k}={v}" for k, v in fields.items())
        items: list[dict[str, Any]] = []
        while True:
            page = await self._must(what, "GET", path, params=params)
            items += page.get("items") or []
            more = (page.get("metadata") or {}).get("continue")
            if not more:
                return items
            params["continue"] = str(more)

    async def get_rotationpolicy(self, name: str) -> dict[str, Any] | None:
        return await self._call(f"reading RotationPolicy {name}", "GET",
                                f"{_POLICIES}/{_q(name)}", missing_ok=True)

    async def list_rotationpolicies(self) -> list[dict[str, Any]]:
        return await self._list(_POLICIES, "listing RotationPolicies")

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        return await self._call(f"reading Namespace {name}", "GET",
                                f"/api/v1/namespaces/{_q(name)}", missing_ok=True)

    async def list_secrets(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return await self._list(_secrets(namespace), "listing Secrets")

    async def list_events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """The core/v1 Events whose involvedObject is this object, oldest first."""
        events = await self._list(f"/api/v1/namespaces/{_q(namespace)}/events",
                                  f"listing Events of {kind} {namespace}/{name}",
                                  fields={"involvedObject.kind": kind,
                                          "involvedObject.name": name})
        return events_in_order(events)

    async def restart_workload(self, kind: str, namespace: str, name: str,
                               annotations: Mapping[str, str]) -> bool:
        """Set pod-template annotations (like `kubectl rollout restart`); False if absent.

        Setting a value the template already has changes nothing, so repeating
        the call for the same rotation never restarts the workload twice.
        """
        patch = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}
        patched = await self._call(
            f"restarting {kind} {namespace}/{name}", "PATCH",
            f"/apis/apps/v1/namespaces/{_q(namespace)}/{_WORKLOADS[kind]}/{_q(name)}",
            body=patch, content_type=_MERGE_PATCH, write=True, missing_ok=True)
        return patched is not None


def _status_of(response: aiohttp.ClientResponse, raw: bytes) -> _ApiStatus:
    try:
        status = json.loads(raw) if raw else {}
    except ValueError:
        status = {}
    return _ApiStatus(response.status, status if isinstance(status, dict) else {},
                      response.reason or "", response.headers.get("Retry-After"))


def status_patch(status: Mapping[str, Any], uid: str, has_status: bool) -> list[dict[str, Any]]:
    """JSON-patch operations for `status_patch`'s contract (see patch_apikey_status)."""
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
    if not has_status:
        return [*ops, {"op": "add", "path": "/status",
                       "value": {k: v for k, v in status.items() if v is not None}}]
    for key, value in status.items():
        path = "/status/" + key.replace("~", "~0").replace("/", "~1")
        if value is None:
            # `remove` fails on an absent member; adding first makes removal unconditional.
            ops += [{"op": "add", "path": path, "value": 0}, {"op": "remove", "path": path}]
        else:
            ops.append({"op": "add", "path": path, "value": value})
    return ops




def secret_body(
    namespace: str,
    name: str,
    data: Mapping[str, str],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    owner: Mapping[str, Any] | None,
    existing: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The full Secret to create or PUT: ours where we manage it, the rest kept from `existing`."""
    body: dict[str, Any] = copy.deepcopy(dict(existing)) if existing else {}
    body["apiVersion"] = "v1"
    body["kind"] = "Secret"
    meta = body.setdefault("metadata", {})
    meta["name"] = name
    meta["namespace"] = namespace
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    if owner is not None:
        meta["ownerReferences"] = [dict(owner)]
    body["type"] = body.get("type") or "Opaque"
    body["data"] = encode_data(data)
    body.pop("stringData", None)
    return body


def event_time(event: Mapping[str, Any]) -> str:
    """An Event's latest time as RFC 3339 text (lastTimestamp, eventTime, or creation)."""
    meta = event.get("metadata") or {}
    return str(event.get("lastTimestamp") or event.get("eventTime")
               or meta.get("creationTimestamp") or "")


def events_in_order(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first. Event times have one-second precision: within a second, the order the
    API server stored them in (a list comes in name order, and kopf's names are random)."""
    return sorted((dict(e) for e in events), key=lambda e: (event_time(e), _stored_order(e)))


def _stored_order(obj: Mapping[str, Any]) -> int:
    """The object's resourceVersion as a number (etcd's revision on a real API server:
    larger is later); 0 when it is not one."""
    version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
    return int(version) if version.isdigit() else 0


class KubeConfigError(KubeError):
    """No usable client configuration: the message names the file or the missing context."""


@dataclass(frozen=True)
class ClientTarget:
    """Where a command-line client connects: the chosen context of a kubeconfig, or the
    in-cluster service account."""

    config: ConnectionInfo
    source: str  # the kubeconfig path, or "in-cluster"
    context: str

    @property
    def server(self) -> str:
        return str(self.config.server)

    @property
    def namespace(self) -> str:
        return self.config.default_namespace or "default"


def _default_login() -> ConnectionInfo:
    """The operator's own login, kopf's way (its public loaders, in its order: the service
    account first, then KUBECONFIG or ~/.kube/config), so both reach the same server."""
    settings = kopf.OperatorSettings()
    try:
        info = (kopf.login_with_service_account(settings=settings)
                or kopf.login_with_kubeconfig(settings=settings))
    except (kopf.LoginError, OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise KubeConfigError(f"no usable Kubernetes credentials ({type(exc).__name__}: "
                              f"{exc})") from None
    if info is None:
        raise KubeConfigError("no Kubernetes credentials: not a pod, and neither KUBECONFIG "
                              "nor ~/.kube/config exists")
    return info


def _in_cluster() -> ClientTarget:
    info = kopf.login_with_service_account(settings=kopf.OperatorSettings())
    if info is None:
        raise KubeConfigError(f"no service account token in {SERVICE_ACCOUNT_DIR}")
    return ClientTarget(info, "in-cluster", "in-cluster")


def load_target(kubeconfig: str | None = None, context: str | None = None) -> ClientTarget:
    """Resolve the configuration like kubectl: `kubeconfig`, else $KUBECONFIG (its first
    existing entry), else in-cluster, else ~/.kube/config; raise KubeConfigError naming what
    is missing."""
    path: str | None = kubeconfig
    if path is None:
        entries = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        if entries:
            path = next((p for p in entries if Path(p).expanduser().is_file()), entries[0])
        elif os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
            try:
                return _in_cluster()
            except (KubeConfigError, OSError):
                pass
        if path is None:
            path = str(Path("~/.kube/config").expanduser())
            if not Path(path).is_file():
                raise KubeConfigError(
                    f"no kubeconfig: {path} does not exist, KUBECONFIG is not set and this is "
                    "not a pod (pass --kubeconfig)")
    if not Path(path).expanduser().is_file():
        raise KubeConfigError(f"kubeconfig {path} does not exist")
    return _from_kubeconfig(path, context)


def _from_kubeconfig(path: str, context: str | None) -> ClientTarget:
    """One context of one kubeconfig file as kopf's ConnectionInfo.

    Not kopf.login_with_kubeconfig(): it reads only $KUBECONFIG's current context, takes no
    --kubeconfig or --context, and leaves relative file names relative to the working
    directory. This reads the same fields (server, CA, client certificate and key as files
    or data, token or basic auth, the context's namespace), plus `tokenFile` and `exec`
    credential plugins (cloud logins: EKS, GKE, AKS), with file names relative to the
    kubeconfig's folder, as kubectl does. Auth-provider plugins are not run (their cached
    access-token is used, as kopf does).
    """
    expanded = Path(path).expanduser()
    try:
        doc = yaml.safe_load(expanded.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise KubeConfigError(f"kubeconfig {path} is not usable ({type(exc).__name__})"
                              ) from None
    except Exception as exc:  # yaml.YAMLError and anything the parser raises
        raise KubeConfigError(f"kubeconfig {path} is not valid YAML ({type(exc).__name__})"
                              ) from None
    try:
        return _context_of(doc, path, expanded.parent, context)
    except KubeConfigError:
        raise
    except (KeyError, TypeError, AttributeError, OSError, ValueError) as exc:
        raise KubeConfigError(f"kubeconfig {path} is not usable ({type(exc).__name__})"
                              ) from None


def _context_of(doc: Mapping[str, Any], path: str, folder: Path,
                context: str | None) -> ClientTarget:
    def named(section: str, field: str) -> dict[str, dict[str, Any]]:
        return {str(item["name"]): item.get(field) or {} for item in doc.get(section) or []}

    contexts = named("contexts", "context")
    if context is not None and context not in contexts:
        raise KubeConfigError(f"context {context!r} not found in kubeconfig {path}")
    chosen = context or doc.get("current-context")
    if not chosen:
        raise KubeConfigError(f"kubeconfig {path} has no current context (pass --context)")
    if chosen not in contexts:
        raise KubeConfigError(f"kubeconfig {path} is not usable: its current context "
                              f"{chosen!r} is not defined")
    ctx = contexts[chosen]
    cluster = named("clusters", "cluster").get(str(ctx.get("cluster")))
    if not cluster or not cluster.get("server"):
        raise KubeConfigError(f"kubeconfig {path} is not usable: context {chosen!r} names no "
                              "cluster with a server")
    user = named("users", "user").get(str(ctx.get("user"))) or {}

    def file(value: Any) -> str | None:
        return str(folder / Path(str(value)).expanduser()) if value else None

    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(str(file(user["tokenFile"]))).read_text(encoding="utf-8").strip()
    if not token:
        token = ((user.get("auth-provider") or {}).get("config") or {}).get("access-token")
    plugin: dict[str, Any] = {}
    if not token and user.get("exec"):
        plugin = _exec_credential(user["exec"], path, folder)
        token = plugin.get("token")
    info = ConnectionInfo(
        server=str(cluster["server"]),
        ca_path=file(cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        certificate_path=file(user.get("client-certificate")),
        certificate_data=(user.get("client-certificate-data")
                          or plugin.get("clientCertificateData")),
        private_key_path=file(user.get("client-key")),
        private_key_data=user.get("client-key-data") or plugin.get("clientKeyData"),
        username=user.get("username"),
        password=user.get("password"),
        token=token or None,
        default_namespace=ctx.get("namespace") or None,
    )
    return ClientTarget(info, path, str(chosen))


def _exec_credential(spec: Mapping[str, Any], path: str, folder: Path) -> dict[str, Any]:
    """Run a kubeconfig's exec credential plugin (as kubectl does, non-interactively) and
    return its ExecCredential status: a token, or client certificate and key data."""
    command = str(spec["command"])
    if os.sep in command and not Path(command).is_absolute():
        command = str(folder / command)
    env = {**os.environ, **{str(e["name"]): str(e["value"]) for e in spec.get("env") or []},
           "KUBERNETES_EXEC_INFO": json.dumps({
               "apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"),
               "kind": "ExecCredential", "spec": {"interactive": False}})}
    try:
        done = subprocess.run([command, *map(str, spec.get("args") or [])], env=env,
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KubeConfigError(f"kubeconfig {path}: credential plugin {command} did not run "
                              f"({type(exc).__name__})") from None
    if done.returncode != 0:
        raise KubeConfigError(f"kubeconfig {path}: credential plugin {command} failed "
                              f"(exit {done.returncode})")
    try:
        status = json.loads(done.stdout)["status"]
    except (ValueError, KeyError, TypeError):
        raise KubeConfigError(f"kubeconfig {path}: credential plugin {command} printed no "
                              "ExecCredential status") from None
    return dict(status) if isinstance(status, Mapping) else {}


def client_for(target: ClientTarget, timeout: float = 15.0) -> KubeClient:
    """A KubeClient connected to `target`."""
    return KubeClient(target, timeout)
