"""The benchmark's bookkeeping: who sent a request, per-key figures, percentiles, completeness."""

from __future__ import annotations

import contextvars

import pytest
from bench.cluster_main import CountingTraffic, actor_of, event_reason
from bench.report import REQUIRED_FIGURES, missing_figures

from apikey_operator.kube import USER_AGENT
from bench import accounting, cluster_main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("agent", "actor"), [
    ("apikey-bench/1", "bench"),
    ("kopf/1.45.2", "kopf"),
    ("python-httpx/0.28", "operator"),
    (USER_AGENT, "operator"),  # the operator's own client (apikey_operator.kube)
    ("", "operator"),
])
def test_requests_are_attributed_by_user_agent(agent: str, actor: str) -> None:
    assert actor_of(agent) == actor


@pytest.mark.parametrize(("key", "expected"), [
    (("kopf", "patch", "apikeys", "", ""), "kopf_write"),
    (("kopf", "create", "events", "", "reason:Logging"), "kopf_log_event"),
    (("kopf", "create", "events", "", "reason:Provisioned"), "our_event"),
    (("operator", "update", "secrets", "", "store"), "store_write"),
    (("operator", "get", "secrets", "", "store"), "store_read"),
    (("operator", "patch", "apikeys", "status", ""), "our_write"),
    (("operator", "watch", "secrets", "", ""), "watch"),
    (("bench", "create", "apikeys", "", ""), "driver"),
])
def test_each_request_lands_in_one_category(key: accounting.RowKey, expected: str) -> None:
    assert accounting.category(key) == expected


def test_summary_counts_per_key_and_leaves_out_driver_and_watches() -> None:
    before = [{"actor": "operator", "verb": "create", "resource": "secrets", "subresource": "",
               "tag": "", "count": 5}]
    after = [
        {"actor": "operator", "verb": "create", "resource": "secrets", "subresource": "",
         "tag": "", "count": 25},
        {"actor": "kopf", "verb": "patch", "resource": "apikeys", "subresource": "",
         "tag": "", "count": 20},
        {"actor": "kopf", "verb": "create", "resource": "events", "subresource": "",
         "tag": "reason:Provisioned", "count": 10},
        {"actor": "bench", "verb": "create", "resource": "apikeys", "subresource": "",
         "tag": "", "count": 10},
        {"actor": "kopf", "verb": "watch", "resource": "apikeys", "subresource": "",
         "tag": "", "count": 3},
    ]
    summary = accounting.summarize(accounting.diff_counts(before, after), keys=10)
    assert summary["requests"] == 50
    assert summary["requests_per_key"] == 5.0
    assert summary["by_verb_per_key"] == {"create": 3.0, "patch": 2.0}
    assert summary["writes_per_key"]["ours_including_events"] == 3.0
    assert summary["writes_per_key"]["ours_excluding_events"] == 2.0
    assert summary["writes_per_key"]["kopf_bookkeeping"] == 2.0
    assert summary["watch_requests"] == 3


def test_store_delta_subtracts_snapshots() -> None:
    before = {"calls": [{"store": "k", "method": "read", "count": 2, "seconds": 1.0,
                         "errors": 0}]}
    after = {"calls": [{"store": "k", "method": "read", "count": 6, "seconds": 3.0, "errors": 1},
                       {"store": "k", "method": "promote", "count": 2, "seconds": 0.5,
                        "errors": 0}]}
    delta = accounting.store_delta(before, after)
    assert delta["calls"] == {"promote": 2, "read": 4}
    assert delta["total"] == 6
    assert delta["errors"] == {"read": 1}
    figures = accounting.store_figures(delta, keys=2)
    assert figures["calls_per_key"] == 3.0
    assert figures["mean_ms_by_method"]["read"] == 500.0


@pytest.mark.parametrize(("q", "expected"), [(50, 5.0), (90, 9.0), (99, 10.0), (100, 10.0)])
def test_percentiles_use_the_nearest_rank(q: float, expected: float) -> None:
    assert accounting.percentile([float(i) for i in range(10, 0, -1)], q) == expected


def test_an_empty_sample_has_zero_percentiles() -> None:
    assert accounting.latency_summary([])["p99_s"] == 0.0


def test_missing_figures_names_every_absent_path() -> None:
    assert "machine.cpus" in missing_figures({})
    assert len(missing_figures({})) == len(REQUIRED_FIGURES)
    partial = {"sizes": {"50": {"baseline": {"memory": {"rss_mb": 60.0}}},
                         "100": {"baseline": {}}}}
    assert "sizes.*.baseline.memory.rss_mb" not in missing_figures(partial)
    assert "sizes.*.baseline.memory.rss_mb" in missing_figures({"sizes": {"1": {}}})


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"kind": "Event", "reason": "Logging"}', "Logging"),
    (b'{"kind": "Event", "reason": "Provisioned"}', "Provisioned"),
    (b'{"kind": "Event"}', ""),
    (b"[1, 2]", ""),
    (b"\xff not json", ""),
])
def test_event_posts_are_told_apart_by_reason(body: bytes, reason: str) -> None:
    assert event_reason(body) == reason


def test_the_proxy_counts_by_actor_and_tags_store_secrets_and_event_reasons() -> None:
    traffic = CountingTraffic("apikey-operator")

    def send(actor: str, verb: str, resource: str, namespace: str, reason: str = "") -> None:
        def run() -> None:
            cluster_main._actor.set(actor)
            cluster_main._event_reason.set(reason)
            traffic.record("POST" if verb == "create" else "GET", "/", verb,
                           resource=resource, namespace=namespace)
        contextvars.copy_context().run(run)

    send("operator", "get", "secrets", "apikey-operator")
    send("operator", "get", "secrets", "apikey-operator")
    send("operator", "get", "secrets", "payments")
    send("kopf", "create", "events", "payments", reason="Logging")
    send("bench", "create", "apikeys", "payments")
    rows = {(r["actor"], r["verb"], r["resource"], r["tag"]): r["count"]
            for r in traffic.snapshot()}
    assert rows == {("operator", "get", "secrets", "store"): 2,
                    ("operator", "get", "secrets", ""): 1,
                    ("kopf", "create", "events", "reason:Logging"): 1,
                    ("bench", "create", "apikeys", ""): 1}
    assert [entry[1] for entry in traffic.timeline_since(0.0)] == [
        "operator", "operator", "operator", "kopf", "bench"]
    # The base class's per-verb totals still see every request.
    assert sum(traffic.totals().values()) == 5
