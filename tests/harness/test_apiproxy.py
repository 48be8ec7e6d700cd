"""The fault proxy in front of kube-apiserver: counts what passes, injects what tests ask for."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from apikey_operator.testing.apiproxy import ApiProxy, route_of
from apikey_operator.testing.controlplane import ControlPlane
from apikey_operator.testing.kubeapi import KubeApi, KubernetesApiError

pytestmark = pytest.mark.integration


@pytest.fixture
def proxied(control_plane: ControlPlane) -> Iterator[tuple[ApiProxy, KubeApi]]:
    with ApiProxy(control_plane.url, ca_file=control_plane.ca_file,
                  cert_file=control_plane.pki["serving.crt"],
                  key_file=control_plane.pki["serving.key"]) as proxy:
        client = KubeApi(proxy.url, token=control_plane.admin_token,
                         ca_file=control_plane.ca_file)
        try:
            yield proxy, client
        finally:
            client.close()


def cm(name: str, namespace: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}}


@pytest.mark.unit
@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("GET", "/api/v1/namespaces/ns/secrets/s", {}, ("get", "", "secrets", "ns", "s", None)),
    ("GET", "/api/v1/secrets", {"watch": "1"}, ("watch", "", "secrets", None, None, None)),
    ("PATCH", "/apis/apikeys.dev/v1alpha1/namespaces/ns/apikeys/a/status", {},
     ("patch", "apikeys.dev", "apikeys", "ns", "a", "status")),
    ("GET", "/api/v1/namespaces/ns", {}, ("get", "", "namespaces", None, "ns", None)),
    ("PUT", "/api/v1/namespaces/ns/finalize", {},
     ("update", "", "namespaces", None, "ns", "finalize")),
    ("DELETE", "/api/v1/namespaces/ns/events", {},
     ("deletecollection", "", "events", "ns", None, None)),
])
def test_requests_are_named_by_verb_and_resource(method: str, path: str,
                                                 query: dict[str, str],
                                                 expected: tuple[object, ...]) -> None:
    r = route_of(method, path, query)
    assert (r.verb, r.group, r.resource, r.namespace, r.name, r.subresource) == expected


def test_requests_pass_through_and_are_counted(proxied: tuple[ApiProxy, KubeApi],
                                               kube_namespace: str) -> None:
    proxy, client = proxied
    mark = proxy.traffic.mark()
    client.create_object(cm("counted", kube_namespace))
    client.get_object("v1/configmaps", kube_namespace, "counted")
    client.patch_object("v1/configmaps", kube_namespace, "counted", {"data": {"a": "b"}})
    verbs = [(r.verb, r.resource, r.status) for r in proxy.traffic.records(since=mark)
             if r.resource == "configmaps"]
    assert verbs == [("create", "configmaps", 201), ("get", "configmaps", 200),
                     ("patch", "configmaps", 200)]


def test_an_injected_status_is_answered_as_the_server_would(
        proxied: tuple[ApiProxy, KubeApi], kube_namespace: str) -> None:
    proxy, client = proxied
    proxy.traffic.inject(status=429, retry_after=3, verbs="create", resource="configmaps")
    with pytest.raises(KubernetesApiError) as caught:
        client.create_object(cm("throttled", kube_namespace))
    assert (caught.value.status, caught.value.reason) == (429, "TooManyRequests")
    assert caught.value.details.get("retryAfterSeconds") == 3
    # `times=1` by default: the next request reaches the server.
    client.create_object(cm("throttled", kube_namespace))


def test_a_delay_slows_the_request_down(proxied: tuple[ApiProxy, KubeApi],
                                        kube_namespace: str) -> None:
    proxy, client = proxied
    fault = proxy.traffic.inject(delay=0.3, verbs="get", resource="configmaps")
    client.get_object("v1/configmaps", kube_namespace, "absent")
    assert fault.hits == 1 and fault.exhausted


def test_cut_watches_end_the_stream_and_a_watch_fault_is_an_error_event(
        proxied: tuple[ApiProxy, KubeApi], kube_namespace: str) -> None:
    proxy, client = proxied
    ended = threading.Event()
    opened = threading.Event()

    def watch() -> None:
        try:
            for _ in client.watch("v1/configmaps", kube_namespace, timeout=30,
                                  on_open=opened.set):
                pass
        except Exception:  # a cut connection may surface as a protocol error
            pass
        ended.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    assert opened.wait(10)
    deadline_ok = False
    for _ in range(100):
        if proxy.open_watches:
            deadline_ok = True
            break
        ended.wait(0.05)
    assert deadline_ok, "the watch never reached the proxy"
    assert proxy.cut_watches("configmaps") == 1
    assert ended.wait(10), "the watch stream did not end when cut"

    proxy.traffic.inject(status=410, verbs="watch", resource="configmaps")
    events = list(client.watch("v1/configmaps", kube_namespace, timeout=5))
    assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410


def test_a_gzipped_list_reaches_the_client_decodable(proxied: tuple[ApiProxy, KubeApi],
                                                     kube_namespace: str) -> None:
    """kube-apiserver gzips lists over 128 kB for clients that accept gzip (kopf's aiohttp
    does); the proxy must pass the encoding on with the body."""
    import gzip
    import json

    import urllib3

    proxy, client = proxied
    for i in range(40):
        client.create_object({**cm(f"big-{i}", kube_namespace), "data": {"v": "x" * 4000}})
    plane_token = client._headers["Authorization"]
    pool = urllib3.PoolManager(ca_certs=str(client._client.connection_pool_kw["ca_certs"]))
    response = pool.request("GET", f"{proxy.url}/api/v1/namespaces/{kube_namespace}/configmaps",
                            headers={"Authorization": plane_token, "Accept-Encoding": "gzip"},
                            decode_content=False, preload_content=True)
    assert response.headers.get("Content-Encoding") == "gzip"
    items = json.loads(gzip.decompress(response.data))["items"]
    assert len(items) >= 40
