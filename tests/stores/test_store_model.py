"""Random sequences of rotation steps (and crashes) against each backend, checked
against a model of what the Protocol promises after every step."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from apikey_operator.stores.base import KeyRef, Store, StoreUnavailable, VersionDocument
from tests.stores.conftest import GRACE_END, new_doc, new_ref
from tests.support.store_backends import StoreBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

T = TypeVar("T")
TOKENS = st.sampled_from(["t1", "t2", "2026-05-01", "an emergency"])




class StoreModel(RuleBasedStateMachine):
    """The Protocol's promises as a tiny state machine; the real store must agree."""

    backend: StoreBackend
    # The test's own event loop: stores may hold loop-bound resources, so every call runs
    # there while hypothesis drives the machine from a worker thread.
    loop: asyncio.AbstractEventLoop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def __init__(self) -> None:
        super().__init__()
        self.store: Store = self.backend.make_store()
        # Every example gets an entry of its own (same backend, same path prefix).
        self.ref: KeyRef = new_ref(name=f"model-{uuid.uuid4().hex[:12]}")
        self.current: VersionDocument | None = None
        self.previous: VersionDocument | None = None
        self.pending: VersionDocument | None = None
        self.valid_until: datetime | None = None
        self.handled: dict[str, str] = {}
        self.highest = 0

    @initialize()
    def provision(self) -> None:
        first = self.run(self.store.write_pending(self.ref, new_doc(1)))
        self.run(self.store.promote(self.ref, first.version, GRACE_END))
        self.current, self.highest = first, first.version

    @rule(rotate=st.none() | TOKENS, revoke=st.none() | TOKENS)
    def write_pending(self, rotate: str | None, revoke: str | None) -> None:
        handles = {k: v for k, v in (("rotate", rotate), ("revoke", revoke)) if v}
        written = self.run(self.store.write_pending(self.ref, new_doc(self.highest + 1,
                                                                 handles=handles)))
        if self.pending is not None:
            assert written == self.pending, "a second pending version was created"
        else:
            assert written.version > self.highest, "a version number was reused"
            assert dict(written.handles) == handles
            self.pending, self.highest = written, written.version

    @precondition(lambda self: self.pending is not None and self.previous is None)
    @rule(hours=st.integers(min_value=1, max_value=48))
    def promote(self, hours: int) -> None:
        assert self.pending is not None
        until = GRACE_END + timedelta(hours=hours)
        self.run(self.store.promote(self.ref, self.pending.version, until))
        self.previous, self.current, self.pending = self.current, self.pending, None
        self.valid_until = until
        self.handled.update(self.current.handles)

    @precondition(lambda self: self.current is not None)
    @rule()
    def promote_current_again(self) -> None:
        assert self.current is not None
        self.run(self.store.promote(self.ref, self.current.version, GRACE_END))

    @precondition(lambda self: self.previous is not None)
    @rule(twice=st.booleans())
    def revoke_previous(self, twice: bool) -> None:
        assert self.previous is not None
        for _ in range(2 if twice else 1):
            self.run(self.store.revoke(self.ref, self.previous.version))
        self.previous, self.valid_until = None, None

    @precondition(lambda self: self.pending is not None)
    @rule()
    def revoke_pending(self) -> None:
        assert self.pending is not None
        self.run(self.store.revoke(self.ref, self.pending.version))
        self.pending = None

    @precondition(lambda self: self.backend.proxy is not None)
    @rule(step=st.sampled_from(["read", "write_pending", "promote", "revoke"]))
    def step_during_an_outage(self, step: str) -> None:
        """Any step fails as unavailable, or (a store may answer from what it knows) is a
        no-op; either way nothing changes, which the invariant checks."""
        # Only steps the Protocol allows now: promote the pending key when no previous one
        # is left, otherwise re-promote the current one (a no-op).
        target = self.current if self.previous is not None else (self.pending or self.current)
        assert target is not None and self.backend.proxy is not None
        calls: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
            "read": lambda: self.store.read(self.ref),
            "write_pending": lambda: self.store.write_pending(self.ref, new_doc(self.highest + 1)),
            "promote": lambda: self.store.promote(self.ref, target.version, GRACE_END),
            "revoke": lambda: self.store.revoke(self.ref, (self.previous or target).version),
        }
        with self.backend.proxy.outage("refuse"):
            try:
                result = self.run(calls[step]())
            except StoreUnavailable:
                return
        if step == "write_pending":
            assert result == self.pending, "a pending version was written during an outage"

    @rule()
    def crash_and_restart(self) -> None:
        self.store = self.backend.make_store()

    @invariant()
    def store_matches_the_model(self) -> None:
        state = self.run(self.store.read(self.ref))
        assert state.exists and state.owned_by(self.ref)
        assert state.current == self.current
        assert state.previous == self.previous
        assert state.pending == self.pending
        assert state.previous_valid_until == self.valid_until
        assert dict(state.handled) == self.handled


async def test_random_rotation_sequences_match_the_model(backend: StoreBackend) -> None:
    machine = type(f"StoreModel_{backend.name}", (StoreModel,),
                   {"backend": backend, "loop": asyncio.get_running_loop()})
    await asyncio.to_thread(
        run_state_machine_as_test,
        machine,
        settings=settings(
            max_examples=10,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture,
                                   HealthCheck.too_slow],
        ),
    )
