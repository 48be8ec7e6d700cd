"""The usage monitor (one batched query for every key in its grace, wakes only the keys whose
decision changed) against a scripted source, and the `usage:` configuration section."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from apikey_operator import metrics
from apikey_operator.config import ConfigError, load_usage, parse_usage
from apikey_operator.grace import UsageWatch
from apikey_operator.spec import EarlyExpiry
from apikey_operator.usage import UsageConfig, UsageError, UsageMonitor, _vector

pytestmark = pytest.mark.unit

NOW = datetime(2026, 3, 1, tzinfo=UTC)
CONFIG = UsageConfig(url="http://prometheus:9090", interval=timedelta(seconds=60),
                     window=timedelta(minutes=5))


def watch(n: int, **changes: Any) -> UsageWatch:
    base = dict(current_fingerprint=f"sha256:{n:012x}",
                previous_fingerprint=f"sha256:{n + 100:012x}",
                valid_until=NOW + timedelta(hours=20), grace=timedelta(hours=24),
                early_expiry=EarlyExpiry(timedelta(minutes=5), timedelta(hours=1)),
                in_use_reported=False)
    base.update(changes)
    return UsageWatch(**base)  # type: ignore[arg-type]


class Source:
    def __init__(self, answers: list[dict[str, float] | Exception]) -> None:
        self.answers = answers
        self.queries: list[str] = []

    async def counts(self, promql: str) -> dict[str, float]:
        self.queries.append(promql)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        pass


def monitor(source: Source) -> tuple[UsageMonitor, list[str]]:
    woken: list[str] = []
    return UsageMonitor(CONFIG, wake=woken.append, clock=lambda: NOW, source=source), woken


def count(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("apikey_usage_queries_total",
                                             {"result": result}) or 0.0


async def test_one_query_for_every_key_and_only_the_key_that_can_end_early_is_woken() -> None:
    ending, used = watch(1), watch(2)
    source = Source([{ending.current_fingerprint: 9, ending.previous_fingerprint: 0,
                      used.current_fingerprint: 4, used.previous_fingerprint: 2}])
    mon, woken = monitor(source)
    mon.watch("uid-1", ending)
    mon.watch("uid-2", used)
    before = count("success")
    await mon.tick()
    assert len(source.queries) == 1
    for fp in (ending.current_fingerprint, ending.previous_fingerprint,
               used.current_fingerprint, used.previous_fingerprint):
        assert fp in source.queries[0]
    assert woken == ["uid-1"]
    assert mon.report("uid-1") is not None and mon.report("uid-1").unused_for == CONFIG.window  # type: ignore[union-attr]
    assert mon.report("uid-2").previous_verifications == 2  # type: ignore[union-attr]
    assert count("success") == before + 1


async def test_a_failing_source_wakes_nobody_and_forgets_what_it_proved() -> None:
    w = watch(1)
    source = Source([{w.current_fingerprint: 3}, UsageError("connection refused")])
    mon, woken = monitor(source)
    mon.watch("uid-1", w)
    await mon.tick()
    assert mon.report("uid-1") is not None
    woken.clear()
    failures = count("failure")
    await mon.tick()
    assert woken == [] and mon.report("uid-1") is None
    assert count("failure") == failures + 1


async def test_without_a_key_in_its_grace_there_is_no_query() -> None:
    source = Source([])
    mon, _ = monitor(source)
    await mon.tick()
    mon.watch("uid-1", watch(1))
    mon.watch("uid-1", None)
    await mon.tick()
    assert source.queries == []


async def test_previous_key_in_use_wakes_the_key_once_it_is_due_and_not_after() -> None:
    late = watch(1, valid_until=NOW + timedelta(hours=1))
    used = {late.current_fingerprint: 5, late.previous_fingerprint: 3}
    source = Source([dict(used), dict(used)])
    mon, woken = monitor(source)
    mon.watch("uid-1", late)
    await mon.tick()
    assert woken == ["uid-1"]
    mon.watch("uid-1", watch(1, valid_until=late.valid_until, in_use_reported=True))
    await mon.tick()
    assert woken == ["uid-1"]


async def test_a_new_rotation_starts_its_run_afresh() -> None:
    w = watch(1)
    source = Source([{w.current_fingerprint: 3}])
    mon, _ = monitor(source)
    mon.watch("uid-1", w)
    await mon.tick()
    mon.watch("uid-1", watch(7))
    assert mon.report("uid-1") is None


def test_a_prometheus_answer_is_read_by_fingerprint() -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"fingerprint": "sha256:aaaaaaaaaaaa"}, "value": [1, "4.5"]},
        {"metric": {"fingerprint": "sha256:bbbbbbbbbbbb"}, "value": [1, "NaN"]}]}}
    assert _vector(body, "u") == {"sha256:aaaaaaaaaaaa": 4.5}
    for bad in ({"status": "error"}, {"status": "success", "data": {"resultType": "matrix"}},
                {"status": "success", "data": {"resultType": "vector",
                                                "result": [{"metric": {}}]}}):
        with pytest.raises(UsageError):
            _vector(bad, "u")


# -- configuration ---------------------------------------------------------------------

def test_a_minimal_usage_section_gets_the_documented_defaults() -> None:
    problems: list[str] = []
    config = parse_usage({"prometheus": {"url": "http://prometheus.monitoring:9090"}}, problems)
    assert problems == []
    assert config == UsageConfig(url="http://prometheus.monitoring:9090",
                                 timeout=timedelta(seconds=5), interval=timedelta(minutes=1),
                                 window=timedelta(minutes=5))


def test_every_bad_usage_field_is_one_line() -> None:
    problems: list[str] = []
    parse_usage({"prometheus": {"url": "prometheus:9090", "timeout": "5 s",
                                "interval": "10s", "window": "2d", "extra": 1}}, problems)
    assert len(problems) == 5
    assert any(p.startswith("usage.prometheus.url:") for p in problems)
    assert any(p.startswith("usage.prometheus.timeout:") for p in problems)
    # The contract's floor: at most one query a minute.
    assert "usage.prometheus.interval: 10s is not within 1m..1h" in problems
    assert "usage.prometheus.window: 2d is not within 1m..1d" in problems
    assert "usage.prometheus: unknown key(s) ['extra']" in problems


def test_a_window_shorter_than_the_interval_is_refused() -> None:
    problems: list[str] = []
    parse_usage({"prometheus": {"url": "http://p", "interval": "10m", "window": "5m"}},
                problems)
    assert problems == ["usage.prometheus.window: 5m is shorter than the interval 10m"]


def test_a_bad_usage_section_in_the_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("usage:\n  prometheus: {url: ftp://x}\n")
    with pytest.raises(ConfigError, match=r"usage\.prometheus\.url"):
        load_usage(str(path))
    path.write_text("stores: {}\n")
    assert load_usage(str(path)) is None


def test_the_operator_exits_2_naming_the_bad_usage_field(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("usage:\n  prometheus: {url: http://p:9090, interval: 5s}\n")
    result = subprocess.run([sys.executable, "-m", "apikey_operator.cli", "run", "--config",
                             str(path), "--standalone"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "usage.prometheus.interval: 5s is not within 1m..1h" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_key_without_early_expiry_costs_no_query_before_its_last_tenth() -> None:
    plain = watch(1, early_expiry=None)
    source = Source([{plain.current_fingerprint: 1, plain.previous_fingerprint: 1}])
    mon, woken = monitor(source)
    mon.watch("uid-1", plain)
    await mon.tick()
    assert source.queries == []
    mon.watch("uid-1", watch(1, early_expiry=None, valid_until=NOW + timedelta(hours=2)))
    await mon.tick()
    assert len(source.queries) == 1 and woken == ["uid-1"]


async def test_the_loop_waits_an_interval_even_when_a_tick_needs_no_query() -> None:
    import asyncio

    source = Source([])
    woken: list[str] = []
    mon = UsageMonitor(UsageConfig(url="http://p", interval=timedelta(seconds=30)),
                       wake=woken.append, clock=lambda: NOW, source=source)
    ticks = 0
    real_tick = mon.tick

    async def counted() -> None:
        nonlocal ticks
        ticks += 1
        await real_tick()

    mon.tick = counted  # type: ignore[method-assign]
    mon.watch("uid-1", watch(1, early_expiry=None))
    mon.start()
    await asyncio.sleep(0.2)
    await mon.close()
    assert ticks == 1 and source.queries == []
