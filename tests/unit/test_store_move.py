"""A store move (spec.store changed) in the pure core: a graceful rotation across two store
entries, crash-safe at every step, with every entry it leaves found again from the status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apikey_operator import keys
from apikey_operator.conditions import conditions_for, status_for
from apikey_operator.placement import TARGET, StoreEntry
from apikey_operator.rotation import (
    CreateInitial,
    CreatePending,
    Observation,
    PolicyView,
    Promote,
    PromoteRevoking,
    RetireStore,
    Revoke,
    SecretView,
    Step,
    WriteSecret,
    advance,
    plan,
)
from apikey_operator.spec import RotationPolicy, parse_apikey
from apikey_operator.stores.base import Capabilities, KeyRef, StoreState

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REF = KeyRef("payments", "billing", "uid-1")
GRACE = timedelta(hours=24)
POLICY = PolicyView("p", True, RotationPolicy("p", timedelta(days=30), GRACE, None))


def spec_in(store: str) -> Any:
    return parse_apikey({"metadata": {"name": "billing"}, "spec": {"store": store}})


@dataclass
class Cluster:
    """What survives a crash: every store's entry, the Secret, the recorded status. Each
    reconcile gathers from it as the reconciler does (spec.store, plus the stores the status
    names), so dropping the in-flight observation is a crash."""

    store: str = "a"
    stores: dict[str, StoreState] = field(default_factory=lambda: {
        "a": StoreState(), "b": StoreState(), "c": StoreState()})
    configured: tuple[str, ...] = ("a", "b", "c")
    secret: SecretView = field(default_factory=SecretView)
    status: Mapping[str, Any] = field(default_factory=dict)
    now: datetime = T0
    annotations: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    capabilities: Capabilities = field(default_factory=Capabilities)
    # Stores that number versions themselves, from 1 in a new entry (Vault KV does).
    numbering: tuple[str, ...] = ()

    def gather(self) -> Observation:
        names = [self.status.get("store"), *(self.status.get("formerStores") or [])]
        others = [n for n in dict.fromkeys(names) if isinstance(n, str) and n != self.store]
        return Observation(
            now=self.now, ref=REF, generation=1, spec=spec_in(self.store),
            store_location=f"{self.store}:x", store=self.stores[self.store],
            store_name=self.store, capabilities=self.capabilities,
            elsewhere=tuple(StoreEntry(n, f"{n}:x", self.stores[n]) for n in others
                            if n in self.configured),
            unreachable=tuple(n for n in others if n not in self.configured),
            secret=self.secret, policy=POLICY, status=self.status,
            rotate_request=self.annotations.get("rotate"),
            revoke_request=self.annotations.get("revoke"))

    def reconcile(self, crash_after: int | None = None) -> None:
        """Plan and step until converged (recording the status) or `crash_after` steps."""
        obs = self.gather()
        for taken in range(30):
            if crash_after is not None and taken == crash_after:
                return
            p = plan(obs)
            if p.step is None:
                self.status = status_for(p, self.status, 1, self.now)
                self.events += [str(e.reason) for e in p.events]
                return
            obs = self._do(obs, p.step)
        raise AssertionError(f"no convergence: {self.steps[-10:]}")

    def _do(self, obs: Observation, step: Step) -> Observation:
        self.steps.append(step)
        written = None
        if isinstance(step, CreateInitial | CreatePending):
            target = self.stores[self.store]
            existing = target.current if isinstance(step, CreateInitial) else target.pending
            written = existing or step.document(keys.generate(step.key_format))
            if existing is None and self.store in self.numbering:
                written = replace(written, version=max(target.valid_keys(), default=0) + 1)
        if isinstance(step, Revoke | RetireStore | PromoteRevoking):
            where = step.store or self.store
            state = self.stores[where]
            gone = ([d for d in (state.current, state.previous, state.pending) if d]
                    if isinstance(step, RetireStore) else
                    [d for d in (state.current, state.previous) if d and d.version == (
                        step.version if isinstance(step, Revoke) else step.revokes)])
            self.revoked += [d.key for d in gone]
        after = advance(obs, step, written)
        self.stores[self.store] = after.store
        for entry in after.elsewhere:
            self.stores[entry.name] = entry.state
        for entry in obs.elsewhere:
            if entry.name not in {e.name for e in after.elsewhere}:
                self.stores[entry.name] = StoreState()
        self.secret = after.secret
        self.check()
        return after

    def check(self) -> None:
        """The contract's invariants across every store: the Secret holds only keys some
        store holds as valid, and no revoked key."""
        valid = {k for s in self.stores.values() for k in s.valid_keys().values()}
        for value in self.secret.data.values():
            assert value in valid, "the Secret holds a key no store holds as valid"
            assert value not in self.revoked, "a key was revoked while the Secret held it"

    def live(self) -> dict[str, list[int]]:
        return {name: sorted(s.valid_keys()) for name, s in self.stores.items()
                if s.valid_keys()}

    def move(self, store: str, at: timedelta) -> None:
        self.store = store
        self.now = T0 + at
        self.reconcile()


def provisioned(numbering: tuple[str, ...] = ()) -> Cluster:
    c = Cluster(numbering=numbering)
    c.reconcile()
    assert c.live() == {"a": [1]} and c.status["store"] == "a"
    return c


def test_a_move_keeps_the_old_key_valid_in_the_old_store_for_the_grace() -> None:
    c = provisioned()
    c.move("b", timedelta(hours=1))
    assert c.live() == {"a": [1], "b": [2]}
    assert sorted(c.secret.data) == ["api-key", "api-key-previous"]
    assert (c.status["store"], c.status["formerStores"]) == ("b", ["a"])
    assert c.status["currentKey"]["version"] == 2 and c.status["previousKey"]["version"] == 1
    assert c.status["previousKey"]["validUntil"] == "2026-01-02T01:00:00Z"
    assert c.status["storeRef"] == "b:x"
    assert c.events[-1] == "Rotated"
    c.now = T0 + timedelta(hours=25, seconds=1)
    c.reconcile()
    assert c.live() == {"b": [2]}
    assert isinstance(c.steps[-1], RetireStore) and c.steps[-1].store == "a"
    assert sorted(c.secret.data) == ["api-key"]
    assert "formerStores" not in {k for k, v in c.status.items() if v is not None}
    assert c.events[-1] == "GraceExpired"


def test_a_move_waits_for_a_running_grace_and_says_so() -> None:
    c = provisioned()
    c.now = T0 + timedelta(hours=1)
    c.annotations["rotate"] = "r1"
    c.reconcile()
    assert c.live() == {"a": [1, 2]}
    c.move("b", timedelta(hours=2))
    assert c.live() == {"a": [1, 2]}  # nothing written anywhere
    assert c.status["queuedRotation"]["trigger"] == "storeChange"
    assert c.status["store"] == "a" and c.events[-1] == "RotationQueued"
    c.now = T0 + timedelta(hours=25, seconds=1)
    c.reconcile()
    assert c.live() == {"a": [2], "b": [3]}
    assert c.events[-2:] == ["GraceExpired", "Rotated"]


def count_steps_of_a_move() -> int:
    c = provisioned()
    before = len(c.steps)
    c.move("b", timedelta(hours=1))
    c.now = T0 + timedelta(hours=26)
    c.reconcile()
    return len(c.steps) - before


# Crash after 0..all steps, the last one before the status write that follows it; with a new
# store that numbers its versions itself (the moved key is version 1 again there) too.
@pytest.mark.parametrize("numbering", [(), ("b",)], ids=["same-numbers", "own-numbers"])
@pytest.mark.parametrize("crash_after", range(count_steps_of_a_move() + 1))
def test_a_crash_after_any_step_of_a_move_converges_on_the_same_outcome(
        crash_after: int, numbering: tuple[str, ...]) -> None:
    c = provisioned(numbering)
    moved = 1 if numbering else 2
    c.store, c.now = "b", T0 + timedelta(hours=1)
    first = c.stores["a"].current
    assert first is not None
    steps_before = len(c.steps)
    c.reconcile(crash_after=crash_after)
    if len(c.steps) - steps_before == crash_after:  # the crash came during the move itself
        c.reconcile()
        assert c.live() == {"a": [1], "b": [moved]}
        assert (c.status["store"], c.status["formerStores"]) == ("b", ["a"])
        assert first.key in c.secret.data.values()
        c.now = T0 + timedelta(hours=26)
        c.reconcile()
    else:
        c.now = T0 + timedelta(hours=26)
        c.reconcile(crash_after=crash_after - (len(c.steps) - steps_before))
        c.reconcile()
    assert c.live() == {"b": [moved]}
    assert first.key in c.revoked and first.key not in c.secret.data.values()
    assert c.status["store"] == "b" and not c.status.get("formerStores")
    assert c.events.count("Rotated") == 1 and c.events.count("GraceExpired") == 1


@pytest.mark.parametrize("numbering", [(), ("a", "b", "c")], ids=["same-numbers", "own-numbers"])
@pytest.mark.parametrize("back_to", ["a", "c"])
def test_a_second_move_mid_grace_waits_then_leaves_nothing_behind(
        back_to: str, numbering: tuple[str, ...]) -> None:
    c = provisioned(numbering)
    first = c.stores["a"].current
    c.move("b", timedelta(hours=1))
    second = c.stores["b"].current
    assert first is not None and second is not None
    c.move(back_to, timedelta(hours=2))
    assert c.stores["a"].current == first and c.stores["b"].current == second
    assert c.status["queuedRotation"]["trigger"] == "storeChange"
    assert c.status["store"] == "b"
    assert c.secret.data == {"api-key": second.key, "api-key-previous": first.key}
    c.now = T0 + timedelta(hours=25, seconds=1)
    c.reconcile()
    third = c.stores[back_to].current
    assert third is not None and third.key not in (first.key, second.key)
    assert set(c.live()) == {"b", back_to} and first.key in c.revoked
    assert c.secret.data == {"api-key": third.key, "api-key-previous": second.key}
    assert (c.status["store"], c.status["formerStores"]) == (back_to, ["b"])
    c.now = T0 + timedelta(hours=50)
    c.reconcile()
    assert c.live() == {back_to: [third.version]}
    assert not c.status.get("formerStores")
    assert c.events.count("Rotated") == 2 and c.events.count("GraceExpired") == 2


def test_an_emergency_revoke_mid_move_revokes_the_old_stores_key_at_once() -> None:
    c = provisioned()
    c.move("b", timedelta(hours=1))
    first, second = c.stores["a"].current, c.stores["b"].current
    assert first is not None and second is not None
    c.annotations["revoke"] = "leak"
    c.now = T0 + timedelta(hours=2)
    c.reconcile()
    assert c.live() == {"b": [3]}
    assert {first.key, second.key} <= set(c.revoked)
    assert c.events[-1] == "Revoked"


def test_an_emergency_revoke_with_the_move_still_to_do_moves_at_once() -> None:
    c = provisioned()
    c.now = T0 + timedelta(hours=1)
    c.annotations["revoke"] = "leak"
    c.store = "b"
    c.reconcile()
    assert c.live() == {"b": [2]}
    assert c.status["store"] == "b" and not c.status.get("formerStores")
    assert c.events[-1] == "Revoked"


def test_handled_requests_travel_with_the_key_and_are_not_acted_on_again() -> None:
    c = provisioned()
    c.annotations["rotate"] = "r1"
    c.now = T0 + timedelta(hours=1)
    c.reconcile()
    c.move("b", timedelta(hours=26))
    c.now = T0 + timedelta(hours=60)
    c.reconcile()
    assert c.live() == {"b": [3]}
    steps = len(c.steps)
    c.now = T0 + timedelta(hours=61)
    c.reconcile()
    assert len(c.steps) == steps  # the rotate token answered in store a stays answered


def test_a_store_no_longer_configured_is_kept_in_status_and_reported() -> None:
    c = provisioned()
    c.configured = ("b", "c")
    c.move("b", timedelta(hours=1))
    assert c.live() == {"a": [1], "b": [2]}  # a's entry is out of reach, not forgotten
    assert (c.status["store"], c.status["formerStores"]) == ("b", ["a"])
    p = plan(c.gather())
    cleanup = {x.type: x for x in conditions_for(p)}["StoreCleanup"]
    assert (cleanup.status, cleanup.reason) == (False, "StoreCleanupIncomplete")
    assert "store a still holds" in cleanup.message
    assert {x.type: x for x in conditions_for(p)}["Ready"].status is True


def test_a_move_to_an_unknown_store_changes_nothing_and_says_why() -> None:
    c = provisioned()
    obs = replace(c.gather(), spec=spec_in("nowhere"), store_name="nowhere",
                  store_error="spec.store 'nowhere' is not a configured store")
    p = plan(obs)
    assert p.step is None and p.blocked
    ready = {x.type: x for x in conditions_for(p)}["Ready"]
    assert (ready.status, ready.reason) == (False, "InvalidSpec")
    assert "key version 1 stays current" in ready.message
    assert (p.status["store"], p.status["currentKey"]) == ("a", c.status["currentKey"])


def test_without_a_move_every_step_goes_to_spec_store() -> None:
    c = provisioned()
    c.annotations["rotate"] = "r1"
    c.now = T0 + timedelta(hours=1)
    c.reconcile()
    c.now = T0 + timedelta(hours=26)
    c.reconcile()
    targeted = [s for s in c.steps if isinstance(s, Promote | Revoke)]
    assert targeted and all(s.store == TARGET for s in targeted)
    assert not any(isinstance(s, RetireStore) for s in c.steps)
    assert (c.status["store"], c.status.get("formerStores")) == ("a", None)


def test_a_capable_store_does_not_promote_revoking_across_two_stores() -> None:
    c = provisioned()
    c.capabilities = Capabilities(promote_revoking=True)
    c.annotations["revoke"] = "leak"
    c.store = "b"
    c.now = T0 + timedelta(hours=1)
    c.reconcile()
    assert not any(isinstance(s, PromoteRevoking) for s in c.steps)
    assert isinstance(c.steps[-1], RetireStore) and c.live() == {"b": [2]}


def test_a_move_writes_the_secret_once_with_both_keys_before_promoting() -> None:
    c = provisioned()
    before = len(c.steps)
    c.move("b", timedelta(hours=1))
    moved = c.steps[before:]
    assert [type(s) for s in moved] == [CreatePending, WriteSecret, Promote]
    write = moved[1]
    assert isinstance(write, WriteSecret) and sorted(write.data) == ["api-key", "api-key-previous"]
    promote = moved[2]
    assert isinstance(promote, Promote) and promote.store == TARGET
