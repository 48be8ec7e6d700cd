"""kube.py's HTTP contract against a local aiohttp server standing in for kube-apiserver: the
error mapping (retryAfterSeconds, the 403 message, 404 as None), the field manager and
User-Agent on writes, paging, and the Secret watch's selector, restarts and 410 relist.
The same calls against the real kube-apiserver are in the integration and reliability tests."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from apikey_operator.kube import (
    ClientTarget,
    ConnectionInfo,
    KubeClient,
    KubeError,
    KubeTransient,
    events_in_order,
    load_target,
)

pytestmark = pytest.mark.unit


class FakeApi:
    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.bodies: list[Any] = []
        self.watches: list[list[dict[str, Any]]] = []
        self.watch_params: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        raw = await request.read()
        self.bodies.append(json.loads(raw) if raw else None)
        path = request.path
        if request.query.get("watch") == "true":
            self.watch_params.append(dict(request.query))
            response = web.StreamResponse()
            await response.prepare(request)
            for event in self.watches.pop(0) if self.watches else []:
                await response.write(json.dumps(event).encode() + b"\n")
            if not self.watches:
                await asyncio.sleep(3600)  # the last watch stays open
            return response
        if path.endswith("/conflicted"):
            return web.json_response({"kind": "Status", "code": 409, "reason": "Conflict",
                                      "details": {"retryAfterSeconds": 3}}, status=409)
        if path.endswith("/refused"):
            return web.json_response({"kind": "Status", "code": 403, "reason": "Forbidden",
                                      "message": "secrets \"refused\" is forbidden: no"},
                                     status=403)
        if path.endswith("/broken"):
            return web.Response(status=503, text="<html>upstream down</html>")
        if path.endswith("/invalid"):
            return web.json_response({"kind": "Status", "code": 422, "reason": "Invalid",
                                      "message": "the key value is in here"}, status=422)
        if path.endswith("/missing"):
            return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"},
                                     status=404)
        if request.method == "GET" and path == "/api/v1/namespaces/ns/secrets":
            page = request.query.get("continue")
            return web.json_response({"metadata": {"continue": "" if page else "p2"},
                                      "items": [{"metadata": {"name": page or "p1"}}]})
        return web.json_response({"metadata": {"name": "x", "resourceVersion": "7"}},
                                 status=201 if request.method == "POST" else 200)


@pytest_asyncio.fixture
async def api() -> AsyncIterator[tuple[FakeApi, KubeClient]]:
    fake = FakeApi()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    target = ClientTarget(ConnectionInfo(server=f"http://127.0.0.1:{port}", token="t0k"),
                          "test", "test")
    kube = KubeClient(target, timeout=2.0)
    try:
        yield fake, kube
    finally:
        await kube.close()
        await runner.cleanup()


async def test_statuses_map_to_the_error_kinds(api: tuple[FakeApi, KubeClient]) -> None:
    _fake, kube = api
    assert await kube.get_secret("ns", "missing") is None
    with pytest.raises(KubeTransient) as conflict:
        await kube.get_secret("ns", "conflicted")
    assert (conflict.value.status, conflict.value.retry_after) == (409, 3.0)
    assert str(conflict.value) == "reading Secret ns/conflicted: 409 Conflict"
    with pytest.raises(KubeError) as refused:
        await kube.get_secret("ns", "refused")
    assert not isinstance(refused.value, KubeTransient)
    assert str(refused.value) == ('reading Secret ns/refused: 403 Forbidden: secrets "refused" '
                                  "is forbidden: no")
    with pytest.raises(KubeTransient) as broken:
        await kube.get_secret("ns", "broken")
    assert str(broken.value) == "reading Secret ns/broken: 503 Service Unavailable"
    with pytest.raises(KubeError) as invalid:
        await kube.get_secret("ns", "invalid")
    assert not isinstance(invalid.value, KubeTransient)
    assert "key value" not in str(invalid.value)  # no server message but a 403's


async def test_writes_name_the_field_manager_and_the_user_agent(
        api: tuple[FakeApi, KubeClient]) -> None:
    fake, kube = api
    version = await kube.patch_apikey_status("ns", "k", {"a": 1}, uid="u", has_status=True)
    assert version == "7"
    await kube.create_secret({"metadata": {"namespace": "ns", "name": "s"}, "data": {}})
    patch, create = fake.requests
    assert patch.method == "PATCH"
    assert patch.path == "/apis/apikeys.dev/v1alpha1/namespaces/ns/apikeys/k/status"
    assert patch.headers["Content-Type"] == "application/json-patch+json"
    assert fake.bodies[0][0] == {"op": "test", "path": "/metadata/uid", "value": "u"}
    for request in (patch, create):
        assert request.query["fieldManager"] == "apikey-operator"
        assert request.headers["User-Agent"].startswith("apikey-operator/")
        assert request.headers["Authorization"] == "Bearer t0k"
    assert create.path == "/api/v1/namespaces/ns/secrets"


async def test_lists_follow_every_page(api: tuple[FakeApi, KubeClient]) -> None:
    _fake, kube = api
    items = await kube.list_secrets("ns")
    assert [i["metadata"]["name"] for i in items] == ["p1", "p2"]


def _secret(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


async def test_the_watch_resumes_where_it_stopped_and_relists_after_410(
        api: tuple[FakeApi, KubeClient]) -> None:
    fake, kube = api
    fake.watches = [
        [{"type": "ADDED", "object": _secret("a", "10")},
         {"type": "BOOKMARK", "object": _secret("", "12")}],  # the server ends this watch
        [{"type": "MODIFIED", "object": _secret("a", "13")},
         {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}],
        [{"type": "ADDED", "object": _secret("a", "13")}],
    ]
    seen = []
    async for type_, body in kube.watch_secrets(None, {"managed": "us"}, ("store",)):
        seen.append((type_, body["metadata"]["resourceVersion"]))
        if len(seen) == 3:
            break
    assert seen == [("ADDED", "10"), ("MODIFIED", "13"), ("ADDED", "13")]
    assert [r.path for r in fake.requests] == ["/api/v1/secrets"] * 3  # every namespace
    first, resumed, relisted = fake.watch_params
    assert first["labelSelector"] == "managed=us,!store"
    assert "resourceVersion" not in first
    assert resumed["resourceVersion"] == "12"  # from the bookmark: nothing sent twice
    assert "resourceVersion" not in relisted  # 410 Gone: start over with what exists


async def test_a_refused_connection_is_transient_and_named() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kube = KubeClient(ClientTarget(ConnectionInfo(server=f"https://127.0.0.1:{port}",
                                                  insecure=True), "test", "test"))
    try:
        with pytest.raises(KubeTransient) as refused:
            await kube.get_rotationpolicy("p")
    finally:
        await kube.close()
    assert refused.value.status == 0
    assert str(refused.value) == "reading RotationPolicy p: ConnectError"


def test_a_kubeconfig_context_resolves_relative_files_and_its_namespace(tmp_path: Any) -> None:
    (tmp_path / "token").write_text("from-file\n")
    config = tmp_path / "config"
    config.write_text(
        "clusters: [{name: c, cluster: {server: 'https://k:6443',\n"
        "                               certificate-authority: ca.pem}}]\n"
        "users: [{name: u, user: {tokenFile: token}}]\n"
        "contexts: [{name: one, context: {cluster: c, user: u, namespace: team}},\n"
        "           {name: two, context: {cluster: c, user: u}}]\n"
        "current-context: one\n")
    target = load_target(str(config))
    assert (target.server, target.namespace, target.context) == ("https://k:6443", "team", "one")
    assert target.config.ca_path == str(tmp_path / "ca.pem")
    assert target.config.as_http_headers() == {"Authorization": "Bearer from-file"}
    assert load_target(str(config), "two").namespace == "default"


def test_an_exec_credential_plugin_supplies_the_token(tmp_path: Any) -> None:
    plugin = tmp_path / "bin" / "login"
    plugin.parent.mkdir()
    plugin.write_text("#!/bin/sh\n"
                      "echo '{\"kind\": \"ExecCredential\",'\n"
                      "echo ' \"status\": {\"token\": \"'$WHO'\"}}'\n")
    plugin.chmod(0o755)
    config = tmp_path / "config"
    config.write_text(
        "clusters: [{name: c, cluster: {server: 'https://k:6443'}}]\n"
        "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1,\n"
        "         command: ./bin/login, env: [{name: WHO, value: cloud-token}]}}}]\n"
        "contexts: [{name: one, context: {cluster: c, user: u}}]\n"
        "current-context: one\n")
    target = load_target(str(config))
    assert target.config.as_http_headers() == {"Authorization": "Bearer cloud-token"}
    plugin.write_text("#!/bin/sh\nexit 3\n")
    with pytest.raises(KubeError, match=r"credential plugin .*/bin/login failed \(exit 3\)$"):
        load_target(str(config))


def test_events_within_one_second_come_in_the_order_they_were_stored() -> None:
    # A CI failure: Provisioned and Rotated in the same second, listed by their random
    # names, showed Rotated first in `apikey-operator status`.
    def event(name: str, when: str, version: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "resourceVersion": version}, "lastTimestamp": when}

    listed = [event("kopf-event-a", "2026-12-02T10:00:01Z", "905"),
              event("kopf-event-b", "2026-12-02T10:00:01Z", "97"),
              event("kopf-event-c", "2026-12-02T10:00:00Z", "1200")]
    assert [e["metadata"]["name"] for e in events_in_order(listed)] == [
        "kopf-event-c", "kopf-event-b", "kopf-event-a"]
