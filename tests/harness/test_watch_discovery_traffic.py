"""Watches, discovery, request counting and fault injection of the emulated API server."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import pytest

from apikey_operator.testing.kube_runner import EmulatorRunner
from apikey_operator.testing.kube_traffic import WRITE_VERBS
from tests.harness.http import APIKEYS, Http, apikey, secret

pytestmark = pytest.mark.integration

SECRETS = "/api/v1/namespaces/default/secrets"
KEYS = f"{APIKEYS}/namespaces/default/apikeys"


class Stream:
    """Reads a watch stream in a thread, collecting its events."""

    def __init__(self, url: str) -> None:
        self.response = urllib.request.urlopen(url, timeout=10)
        self.events: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.response:
            self.events.append(json.loads(line))
        self.closed.set()

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 5
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.events

    def summary(self) -> list[tuple[str, str]]:
        return [(e["type"], e["object"]["metadata"]["name"]) for e in self.events]


def test_watch_streams_json_lines_from_a_resource_version(http: Http,
                                                          kube_api: EmulatorRunner) -> None:
    http.post(SECRETS, secret("before"))
    rv = http.get(SECRETS).body["metadata"]["resourceVersion"]
    stream = Stream(f"{kube_api.url}{SECRETS}?watch=true&resourceVersion={rv}")
    assert stream.response.headers["Content-Type"].startswith("application/json")
    http.post(SECRETS, secret("after"))
    http.patch(f"{SECRETS}/after", {"metadata": {"labels": {"a": "b"}}})
    http.delete(f"{SECRETS}/after")
    stream.wait_for(3)
    assert stream.summary() == [("ADDED", "after"), ("MODIFIED", "after"), ("DELETED", "after")]
    assert kube_api.cut_watches() == 1
    assert stream.closed.wait(5)


def test_watch_without_version_starts_with_existing_objects(http: Http,
                                                            kube_api: EmulatorRunner) -> None:
    http.post(SECRETS, secret("old"))
    stream = Stream(f"{kube_api.url}{SECRETS}?watch=true")
    stream.wait_for(1)
    assert stream.summary() == [("ADDED", "old")]
    kube_api.cut_watches()


def test_watch_resumes_from_an_older_version_and_honours_selectors(
        http: Http, kube_api: EmulatorRunner) -> None:
    rv = http.get(SECRETS).body["metadata"]["resourceVersion"]
    http.post(SECRETS, {**secret("x"), "metadata": {"name": "x", "labels": {"pick": "me"}}})
    http.post(SECRETS, secret("y"))
    stream = Stream(f"{kube_api.url}{SECRETS}?watch=true&resourceVersion={rv}"
                    "&labelSelector=pick%3Dme")
    http.patch(f"{SECRETS}/x", {"metadata": {"labels": {"pick": None}}})
    stream.wait_for(2)
    # Leaving the selection looks like a deletion to the watcher.
    assert stream.summary() == [("ADDED", "x"), ("DELETED", "x")]
    kube_api.cut_watches()


def test_watch_from_a_forgotten_version_is_410_gone(kube_api: EmulatorRunner,
                                                    http: Http) -> None:
    kube_api.emulator.watch_backlog = 2
    for index in range(5):
        http.post(SECRETS, secret(f"s{index}"))
    stream = Stream(f"{kube_api.url}{SECRETS}?watch=true&resourceVersion=1")
    assert stream.closed.wait(5)
    assert stream.events[0]["type"] == "ERROR"
    assert stream.events[0]["object"]["code"] == 410


def test_watch_ends_after_timeout_seconds(kube_api: EmulatorRunner) -> None:
    stream = Stream(f"{kube_api.url}{SECRETS}?watch=true&timeoutSeconds=1")
    assert stream.closed.wait(5)


def test_core_discovery_names_group_version_v1(http: Http) -> None:
    assert http.get("/api").body["versions"] == ["v1"]
    core = http.get("/api/v1").body
    assert core["groupVersion"] == "v1"
    names = {r["name"]: r for r in core["resources"]}
    assert {"secrets", "namespaces", "events", "configmaps", "namespaces/status"} <= set(names)
    assert names["namespaces"]["namespaced"] is False
    assert names["secrets"]["namespaced"] is True


def test_group_discovery_serves_crds_and_builtins(http: Http) -> None:
    groups = {g["name"]: g for g in http.get("/apis").body["groups"]}
    assert {"apikeys.dev", "apps", "events.k8s.io", "kopf.dev", "coordination.k8s.io",
            "apiextensions.k8s.io"} <= set(groups)
    assert groups["apikeys.dev"]["preferredVersion"]["groupVersion"] == "apikeys.dev/v1alpha1"
    assert http.get("/apis/apikeys.dev").body["name"] == "apikeys.dev"
    resources = {r["name"]: r for r in http.get(APIKEYS).body["resources"]}
    assert resources["apikeys"]["namespaced"] is True
    assert resources["apikeys"]["shortNames"] == ["ak"]
    assert resources["apikeys"]["categories"] == ["apikeys"]
    assert "watch" in resources["apikeys"]["verbs"]
    assert resources["rotationpolicies"]["namespaced"] is False
    assert "apikeys/status" in resources
    apps = {r["name"] for r in http.get("/apis/apps/v1").body["resources"]}
    assert {"deployments", "statefulsets", "daemonsets"} <= apps
    assert http.get("/apis/nothing.example/v1").status == 404


def test_openapi_v3_lists_group_versions(http: Http) -> None:
    root = http.get("/openapi/v3").body
    url = root["paths"]["apis/apikeys.dev/v1alpha1"]["serverRelativeURL"]
    doc = http.get(url).body
    patch = doc["paths"]["/apis/apikeys.dev/v1alpha1/namespaces/{namespace}/apikeys/{name}"][
        "patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "ApiKey"
    assert "dev.apikeys.v1alpha1.ApiKey" in doc["components"]["schemas"]


def test_requests_are_counted_by_verb_and_resource(http: Http, kube_api: EmulatorRunner) -> None:
    traffic = kube_api.traffic
    mark = traffic.mark()
    http.post(KEYS, apikey("a"))
    http.get(f"{KEYS}/a")
    http.get(KEYS)
    http.patch(f"{KEYS}/a/status", {"status": {"storeRef": "x"}})
    http.post(SECRETS, secret("s"))
    stream = Stream(f"{kube_api.url}{SECRETS}?watch=true")
    assert traffic.count(since=mark) == 5  # the watch is left out
    assert traffic.count(since=mark, verbs=WRITE_VERBS, resource="apikeys") == 2
    assert traffic.count(since=mark, verbs="patch", subresource="status") == 1
    assert traffic.count(since=mark, verbs="watch") == 1
    assert traffic.count(since=mark, verbs="list", resource="apikeys") == 1
    assert traffic.totals()[("create", "secrets")] == 1
    kube_api.cut_watches()
    stream.closed.wait(5)
    idle = traffic.mark()
    assert traffic.count(since=idle) == 0
    # Served paths bypass kmock's request history, which it walks on every request.
    assert list(kube_api.emulator._requests) == []


def test_injected_faults_hit_the_next_matching_requests(http: Http,
                                                        kube_api: EmulatorRunner) -> None:
    traffic = kube_api.traffic
    http.post(KEYS, apikey("a"))
    conflict = traffic.inject(status=409, verbs="patch", resource="apikeys", times=2)
    assert http.get(f"{KEYS}/a").status == 200  # reads are not matched
    assert http.patch(f"{KEYS}/a", {"metadata": {"labels": {"a": "1"}}}).status == 409
    assert http.patch(f"{KEYS}/a", {"metadata": {"labels": {"a": "2"}}}).status == 409
    assert conflict.remaining == 0
    assert http.patch(f"{KEYS}/a", {"metadata": {"labels": {"a": "3"}}}).status == 200

    traffic.inject(status=429, verbs=WRITE_VERBS, resource="secrets", retry_after=3)
    throttled = http.post(SECRETS, secret("s"))
    assert throttled.status == 429
    assert throttled.headers["Retry-After"] == "3"
    assert throttled.body["details"]["retryAfterSeconds"] == 3
    assert http.get(f"{SECRETS}/s").status == 404  # the faulted request did nothing

    traffic.inject(status=500, verbs="create", times=None, resource="secrets")
    assert [http.post(SECRETS, secret("t")).status for _ in range(3)] == [500, 500, 500]
    traffic.clear_faults()
    assert http.post(SECRETS, secret("t")).status == 201

    slow = traffic.inject(delay=0.3, verbs="get", resource="secrets")
    started = time.monotonic()
    assert http.get(f"{SECRETS}/t").status == 200
    assert time.monotonic() - started >= 0.3
    assert slow.hits == 1
    assert [r.injected for r in traffic.records(verbs="create", resource="secrets")] == [
        True, True, True, True, False]


def test_watch_list_sends_initial_objects_then_a_bookmark(http: Http,
                                                          kube_api: EmulatorRunner) -> None:
    http.post(SECRETS, secret("x"))
    stream = Stream(f"{kube_api.url}{SECRETS}?watch=true&sendInitialEvents=true"
                    "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true")
    events = stream.wait_for(2)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {
        "k8s.io/initial-events-end": "true"}
    kube_api.cut_watches()


def test_watch_faults_arrive_as_error_events(http: Http, kube_api: EmulatorRunner) -> None:
    kube_api.traffic.inject(status=410, verbs="watch", resource="secrets")
    stream = Stream(f"{kube_api.url}{SECRETS}?watch=true&resourceVersion=1")
    assert stream.closed.wait(5)
    assert stream.events[0]["type"] == "ERROR"
    assert stream.events[0]["object"]["code"] == 410
    assert stream.events[0]["object"]["reason"] == "Expired"


def test_creates_are_counted_per_object_name(http: Http, kube_api: EmulatorRunner) -> None:
    http.post(KEYS, apikey("a"))
    http.patch(f"{KEYS}/a", {"metadata": {"labels": {"x": "y"}}})
    http.post(KEYS, apikey("b"))
    assert kube_api.traffic.count(verbs=WRITE_VERBS, resource="apikeys", name="a") == 2
    assert kube_api.traffic.count(verbs="create", namespace="default", name="b") == 1
