"""ApiKeyProvider against in-memory sources: caching, single-flight, fail-closed, serve-stale."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from apikey_operator.client import ApiKeyProvider, SourceUnavailable

from .helpers import CountingSource, FakeClock, ScriptedSource, library_log

pytestmark = pytest.mark.unit

KEY = "bill_unit0test0key0not0real0000000000000000000001"


def make(
    key: str = KEY, **kwargs: object
) -> tuple[ApiKeyProvider, ScriptedSource, CountingSource, FakeClock]:
    scripted = ScriptedSource(key)
    counting = CountingSource(scripted)
    clock = FakeClock()
    provider = ApiKeyProvider(counting, clock=clock, **kwargs)  # type: ignore[arg-type]
    return provider, scripted, counting, clock


def test_a_cache_hit_does_not_read_the_source() -> None:
    provider, _, counting, clock = make(ttl=60)
    assert provider.get() == KEY
    clock.advance(59)
    assert [provider.get() for _ in range(100)] == [KEY] * 100
    assert counting.calls == 1


def test_an_expired_ttl_reads_the_source_again() -> None:
    provider, scripted, counting, clock = make(ttl=60)
    assert provider.get() == KEY
    scripted.key = "rotated"
    clock.advance(60)
    assert provider.get() == "rotated"
    assert counting.calls == 2


def test_the_default_ttl_is_fifteen_minutes() -> None:
    provider, _, _, _ = make()
    assert provider.ttl == 900


def test_invalidate_forces_a_read() -> None:
    provider, scripted, counting, _ = make(ttl=60)
    provider.get()
    scripted.key = "rotated"
    provider.invalidate()
    assert provider.get() == "rotated"
    assert counting.calls == 2


def test_a_read_started_before_invalidate_does_not_refill_the_cache() -> None:
    provider, scripted, counting, _ = make(ttl=60)
    counting.gate.clear()
    with ThreadPoolExecutor(1) as pool:
        early = pool.submit(provider.get)
        while counting.calls == 0:
            threading.Event().wait(0.001)
        provider.invalidate()
        scripted.key = "rotated"
        counting.gate.set()
        assert early.result(timeout=10) == KEY
    assert provider.get() == "rotated"
    assert counting.calls == 2


def test_fifty_concurrent_gets_on_an_empty_cache_make_one_read() -> None:
    provider, _, counting, _ = make()
    counting.gate.clear()
    with ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(provider.get) for _ in range(50)]
        # Let every thread reach the provider before the one read completes.
        threading.Event().wait(0.2)
        counting.gate.set()
        results = [f.result(timeout=10) for f in futures]
    assert results == [KEY] * 50
    assert counting.calls == 1


async def test_fifty_concurrent_agets_on_an_empty_cache_make_one_read() -> None:
    provider, _, counting, _ = make()
    counting.gate.clear()
    tasks = [asyncio.create_task(provider.aget()) for _ in range(50)]
    await asyncio.sleep(0.1)
    # The loop is not blocked by the pending read: this line runs while it waits.
    assert not any(t.done() for t in tasks)
    counting.gate.set()
    assert await asyncio.gather(*tasks) == [KEY] * 50
    assert counting.calls == 1


async def test_threads_and_tasks_share_one_read() -> None:
    provider, _, counting, _ = make()
    counting.gate.clear()
    with ThreadPoolExecutor(10) as pool:
        thread_results = [pool.submit(provider.get) for _ in range(10)]
        tasks = [asyncio.create_task(provider.aget()) for _ in range(10)]
        await asyncio.sleep(0.1)
        counting.gate.set()
        assert await asyncio.gather(*tasks) == [KEY] * 10
        assert [f.result(timeout=10) for f in thread_results] == [KEY] * 10
    assert counting.calls == 1


async def test_a_cancelled_leader_does_not_strand_the_followers() -> None:
    provider, _, counting, _ = make()
    counting.gate.clear()
    leader = asyncio.create_task(provider.aget())
    await asyncio.sleep(0.05)
    follower = asyncio.create_task(provider.aget())
    await asyncio.sleep(0.05)
    leader.cancel()
    counting.gate.set()
    assert await follower == KEY
    assert counting.calls == 1


def test_an_unavailable_source_with_an_empty_cache_fails_closed() -> None:
    provider, scripted, _, _ = make()
    scripted.down = True
    with pytest.raises(SourceUnavailable, match="scripted:test: cannot connect"):
        provider.get()


async def test_aget_fails_closed_too() -> None:
    provider, scripted, _, _ = make()
    scripted.down = True
    with pytest.raises(SourceUnavailable):
        await provider.aget()


def test_fail_mode_does_not_serve_an_expired_key() -> None:
    provider, scripted, _, clock = make(ttl=60, on_error="fail")
    provider.get()
    scripted.down = True
    clock.advance(61)
    with pytest.raises(SourceUnavailable) as info:
        provider.get()
    assert KEY not in str(info.value)


def test_serve_stale_serves_and_warns_without_the_key(caplog: pytest.LogCaptureFixture) -> None:
    provider, scripted, _, clock = make(ttl=60, on_error="serve-stale", max_stale=300)
    provider.get()
    scripted.down = True
    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="apikey_operator.client"):
        assert provider.get() == KEY
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "stale" in warnings[0].getMessage()
    assert KEY not in library_log(caplog)


def test_serve_stale_raises_after_max_stale() -> None:
    provider, scripted, _, clock = make(ttl=60, on_error="serve-stale", max_stale=300)
    provider.get()
    scripted.down = True
    clock.advance(60 + 300)
    assert provider.get() == KEY
    clock.advance(2)
    with pytest.raises(SourceUnavailable, match="max_stale") as info:
        provider.get()
    assert KEY not in str(info.value)
    # Still failing closed afterwards, and the stale key is gone for good.
    clock.advance(2)
    with pytest.raises(SourceUnavailable):
        provider.get()


def test_serve_stale_recovers_when_the_source_returns() -> None:
    provider, scripted, _, clock = make(ttl=60, on_error="serve-stale")
    provider.get()
    scripted.down = True
    clock.advance(61)
    assert provider.get() == KEY
    scripted.down = False
    scripted.key = "rotated"
    clock.advance(1)
    assert provider.get() == "rotated"


def test_a_failing_source_is_not_hammered() -> None:
    provider, scripted, counting, clock = make(ttl=60, on_error="serve-stale", retry_interval=5)
    provider.get()
    scripted.down = True
    clock.advance(61)
    assert [provider.get() for _ in range(20)] == [KEY] * 20
    assert counting.calls == 2
    clock.advance(5)
    provider.get()
    assert counting.calls == 3


def test_an_unexpected_error_in_a_source_fails_closed_without_its_message() -> None:
    class Broken:
        description = "broken:test"

        def read(self) -> str:
            raise ValueError("Expecting value: secret-ish content")

    provider = ApiKeyProvider(Broken())
    with pytest.raises(SourceUnavailable) as info:
        provider.get()
    assert "ValueError" in str(info.value)
    assert "secret-ish" not in str(info.value)
    # Not even in the chain, which a traceback in a log would print.
    cause = info.value.__cause__
    assert cause is not None and cause.__cause__ is None and cause.__context__ is None


def test_an_interrupt_inside_a_source_releases_the_waiters() -> None:
    class Interrupted:
        description = "interrupted:test"
        calls = 0

        def read(self) -> str:
            self.calls += 1
            if self.calls == 1:
                raise KeyboardInterrupt
            return KEY

    provider = ApiKeyProvider(Interrupted(), retry_interval=0)
    with pytest.raises(KeyboardInterrupt):
        provider.get()
    # The interrupted read did not leave a flight behind that would block every caller.
    assert provider.get() == KEY


@pytest.mark.parametrize(
    "kwargs",
    [{"on_error": "ignore"}, {"ttl": -1}, {"max_stale": -1}, {"retry_interval": -1}],
    ids=["unknown on_error", "negative ttl", "negative max_stale", "negative retry_interval"],
)
def test_invalid_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ApiKeyProvider(ScriptedSource(KEY), **kwargs)  # type: ignore[arg-type]
