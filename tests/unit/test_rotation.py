"""The pure rotation state machine, driven by a fake clock and an in-memory world."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apikey_operator import keys
from apikey_operator.rotation import (
    CreatePending,
    Observation,
    PolicyView,
    Promote,
    Revoke,
    WriteSecret,
    advance,
    plan,
    request_token,
)
from apikey_operator.spec import NamespaceSelector, RotationPolicy, parse_apikey
from apikey_operator.stores.base import KeyRef, StoreState

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REF = KeyRef("payments", "billing", "uid-1")
SPEC = parse_apikey({"metadata": {"name": "billing"}, "spec": {"key": {"prefix": "bill_"}}})
POLICY = PolicyView("p", True, RotationPolicy("p", timedelta(days=30), timedelta(hours=24), None))


@dataclass
class World:
    """The store and the Secret as plan/advance see them, plus every Secret content observed."""

    obs: Observation
    secret_history: list[dict[str, str]]
    revoked: set[int]

    @classmethod
    def new(cls, **kwargs: Any) -> World:
        obs = Observation(now=T0, ref=REF, generation=1, spec=SPEC, store_location="k:x",
                          policy=POLICY, **kwargs)
        return cls(obs, [], set())

    def step(self) -> Any:
        """Run one step; returns it (None when converged)."""
        p = plan(self.obs)
        step = p.step
        if step is None:
            self.obs = replace(self.obs, status=dict(p.status))
            return None
        written = None
        if isinstance(step, CreatePending):
            written = self.obs.store.pending or step.document(keys.generate(step.key_format))
        if isinstance(step, Revoke):
            self.revoked.add(step.version)
        self.obs = advance(self.obs, step, written)
        if isinstance(step, WriteSecret):
            self.secret_history.append(dict(step.data))
        self.check_invariants()
        return step

    def converge(self, limit: int = 20) -> list[Any]:
        steps = []
        for _ in range(limit):
            step = self.step()
            if step is None:
                return steps
            steps.append(step)
        raise AssertionError(f"no convergence after {limit} steps: {steps}")

    def at(self, moment: datetime, **changes: Any) -> World:
        self.obs = replace(self.obs, now=moment, **changes)
        return self

    def check_invariants(self) -> None:
        state = self.obs.store
        valid = set(state.valid_keys().values())
        for value in self.obs.secret.data.values():
            assert value in valid, "the Secret holds a key the store does not hold as valid"
        pending = [d for d in (state.pending,) if d]
        assert len(pending) <= 1


def current_key(world: World) -> str:
    return world.obs.secret.data[SPEC.current_key]


def test_a_new_key_is_created_projected_and_promoted_in_that_order() -> None:
    world = World.new()
    steps = world.converge()
    assert [type(s) for s in steps] == [CreatePending, WriteSecret, Promote]
    assert keys.matches_format(current_key(world), SPEC.key_format)
    assert SPEC.previous_key not in world.obs.secret.data
    assert steps[2].event.reason == "Provisioned"
    final = plan(world.obs)
    assert final.status["currentKey"]["fingerprint"] == keys.fingerprint(current_key(world))
    assert final.wake_at == T0 + timedelta(days=30)
    assert {c.type: c.reason for c in final.conditions}["Ready"] == "Provisioned"


def test_schedule_rotates_with_grace_then_expires_the_old_key() -> None:
    world = World.new()
    world.converge()
    old = current_key(world)
    world.at(T0 + timedelta(days=30))
    steps = world.converge()
    assert [type(s) for s in steps] == [CreatePending, WriteSecret, Promote]
    assert world.obs.secret.data[SPEC.previous_key] == old
    assert steps[2].event.reason == "Rotated"
    assert plan(world.obs).wake_at == T0 + timedelta(days=31)
    # Before the grace ends nothing happens.
    world.at(T0 + timedelta(days=30, hours=23))
    assert world.converge() == []
    world.at(T0 + timedelta(days=31))
    steps = world.converge()
    assert [type(s) for s in steps] == [WriteSecret, Revoke]
    assert steps[1].event.reason == "GraceExpired"
    assert SPEC.previous_key not in world.obs.secret.data


def test_a_rotate_request_is_acted_on_once() -> None:
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(hours=1), rotate_request="r1")
    assert [type(s) for s in world.converge()] == [CreatePending, WriteSecret, Promote]
    assert world.obs.store.handled["rotate"] == "r1"
    assert world.converge() == []
    assert plan(world.obs).status["lastHandledRotate"] == "r1"


def test_an_annotation_present_at_creation_does_not_rotate_a_new_key() -> None:
    world = World.new(rotate_request="x", revoke_request="y")
    world.converge()
    assert world.obs.store.current is not None and world.obs.store.current.version == 1
    assert world.converge() == []


def test_revoke_removes_the_old_key_at_once_without_grace() -> None:
    world = World.new()
    world.converge()
    old_version = world.obs.store.current.version
    world.at(T0 + timedelta(hours=2), revoke_request="now")
    steps = world.converge()
    assert [type(s) for s in steps] == [CreatePending, WriteSecret, Promote, Revoke]
    assert steps[-1].version == old_version and steps[-1].event.reason == "Revoked"
    assert SPEC.previous_key not in world.obs.secret.data
    assert world.obs.store.previous is None


def test_revoke_during_a_grace_period_removes_both_old_keys() -> None:
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(hours=1), rotate_request="r1")
    world.converge()
    assert world.obs.store.previous is not None
    world.at(T0 + timedelta(hours=2), revoke_request="v1")
    world.converge()
    state = world.obs.store
    assert state.previous is None and state.current.version == 3
    assert world.revoked == {1, 2}
    assert list(world.obs.secret.data) == [SPEC.current_key]


def test_rotate_requested_twice_in_a_row_never_holds_three_keys() -> None:
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(hours=1), rotate_request="a")
    world.converge()
    world.at(T0 + timedelta(hours=2), rotate_request="b")
    steps = world.converge()
    # The key still in grace is expired early (out of the Secret first), then the new rotation.
    assert [type(s) for s in steps] == [WriteSecret, Revoke, CreatePending, WriteSecret, Promote]
    assert world.revoked == {1}


def test_a_key_format_change_rotates_gracefully() -> None:
    world = World.new()
    world.converge()
    old = current_key(world)
    new_spec = parse_apikey({"metadata": {"name": "billing"},
                             "spec": {"key": {"encoding": "hex", "length": 16}}})
    world.at(T0 + timedelta(hours=1), spec=new_spec)
    world.converge()
    assert keys.matches_format(current_key(world), new_spec.key_format)
    assert world.obs.secret.data[SPEC.previous_key] == old


@pytest.mark.parametrize("crash_after", range(1, 4), ids=lambda n: f"crash after step {n}")
@pytest.mark.parametrize("trigger", ["schedule", "rotate", "revoke"])
def test_a_crash_between_steps_converges_without_a_second_pending_or_a_lost_key(
    crash_after: int, trigger: str
) -> None:
    world = World.new()
    world.converge()
    old = current_key(world)
    changes: dict[str, Any] = {}
    moment = T0 + timedelta(hours=1)
    if trigger == "schedule":
        moment = T0 + timedelta(days=30)
    elif trigger == "rotate":
        changes["rotate_request"] = "r"
    else:
        changes["revoke_request"] = "v"
    world.at(moment, **changes)
    for _ in range(crash_after):
        world.step()
    # The crash loses in-memory state and status; the store and the Secret survive.
    world.obs = replace(world.obs, status={})
    world.converge()
    state = world.obs.store
    assert state.pending is None
    assert state.current is not None and state.current.version == 2
    if trigger == "revoke":
        assert SPEC.previous_key not in world.obs.secret.data
        assert state.previous is None
    else:
        assert world.obs.secret.data[SPEC.previous_key] == old
    # Re-running after convergence does nothing: the trigger is not acted on twice.
    assert world.converge() == []


def test_a_pending_key_is_reused_not_replaced() -> None:
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(hours=1), rotate_request="r")
    create = world.step()
    assert isinstance(create, CreatePending)
    pending = world.obs.store.pending
    again = plan(world.obs).step
    assert not isinstance(again, CreatePending)
    assert world.obs.store.pending == pending


def test_a_policy_change_mid_grace_replans_the_grace_end_not_the_promoted_one() -> None:
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(days=30))
    world.converge()
    shorter = PolicyView("p", True, RotationPolicy("p", timedelta(days=7), timedelta(hours=1),
                                                   None))
    world.at(T0 + timedelta(days=30, hours=2), policy=shorter)
    # The previous key keeps the validUntil it was promoted with; the next rotation moves up.
    p = plan(world.obs)
    assert p.status["previousKey"]["validUntil"] == "2026-02-01T00:00:00Z"
    assert p.status["nextRotationTime"] == "2026-02-07T00:00:00Z"


def test_a_deleted_secret_is_restored_with_the_same_key() -> None:
    world = World.new()
    world.converge()
    key = current_key(world)
    world.obs = replace(world.obs, secret=replace(world.obs.secret, exists=False, data={}))
    steps = world.converge()
    assert len(steps) == 1 and steps[0].purpose == "restore"
    assert steps[0].event.reason == "SecretRestored"
    assert current_key(world) == key


def test_an_edited_secret_is_restored() -> None:
    world = World.new()
    world.converge()
    key = current_key(world)
    world.obs = replace(world.obs, secret=replace(world.obs.secret,
                                                  data={SPEC.current_key: "tampered"}))
    world.converge()
    assert current_key(world) == key


def test_a_secret_owned_by_someone_else_is_never_touched() -> None:
    world = World.new()
    world.obs = replace(world.obs, secret=replace(world.obs.secret, exists=True, owner_uid="x",
                                                  managed=False))
    p = plan(world.obs)
    assert p.step is None and p.blocked
    assert p.conditions[0].reason == "SecretConflict"


def test_a_store_entry_of_another_apikey_is_never_touched() -> None:
    world = World.new()
    world.obs = replace(world.obs, store=StoreState(exists=True, owner_uid="other"))
    p = plan(world.obs)
    assert p.step is None and p.conditions[0].reason == "StoreConflict"


def test_a_namespace_the_policy_does_not_admit_keeps_its_key_and_does_not_rotate() -> None:
    world = World.new()
    world.converge()
    selective = PolicyView("p", True, RotationPolicy(
        "p", timedelta(days=30), timedelta(hours=1), NamespaceSelector({"env": "prod"})))
    world.at(T0 + timedelta(days=40), policy=selective, namespace_labels={"env": "dev"})
    p = plan(world.obs)
    assert p.step is None
    assert p.conditions[0].reason == "PolicyNotAllowed" and not p.conditions[0].status
    assert p.status["currentKey"]["version"] == 1


def test_a_missing_policy_leaves_the_key_valid_and_unscheduled() -> None:
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(days=40), policy=PolicyView("p", False))
    p = plan(world.obs)
    assert p.step is None and p.wake_at is None
    reasons = {c.type: (c.status, c.reason) for c in p.conditions}
    assert reasons["Ready"] == (True, "Provisioned")
    assert reasons["Scheduled"] == (False, "PolicyNotFound")
    assert p.status["nextRotationTime"] is None


def test_an_invalid_policy_stalls_with_a_message_naming_the_field() -> None:
    world = World.new()
    world.converge()
    bad = PolicyView("p", True, error="spec.gracePeriod 40d is not shorter than spec.rotateEvery")
    world.at(T0 + timedelta(days=40), policy=bad)
    p = plan(world.obs)
    assert p.step is None
    reasons = {c.type: c for c in p.conditions}
    assert reasons["Stalled"].reason == "InvalidSpec" and "spec.gracePeriod" in \
        reasons["Stalled"].message


def test_an_invalid_spec_stalls_and_keeps_the_last_known_status() -> None:
    obs = Observation(now=T0, ref=REF, generation=2, spec=None, spec_error="spec.key.length 8",
                      status={"currentKey": {"version": 3}})
    p = plan(obs)
    assert p.step is None and p.blocked
    assert {c.type for c in p.conditions} == {"Ready", "Stalled"}
    assert p.status["currentKey"] == {"version": 3}


def test_restarts_are_requested_after_a_rotation_but_not_after_provisioning() -> None:
    spec = parse_apikey({"metadata": {"name": "billing"},
                         "spec": {"restartTargets": [{"kind": "Deployment", "name": "api"}]}})
    world = World.new()
    world.obs = replace(world.obs, spec=spec)
    world.converge()
    assert plan(world.obs).restarts == ()
    world.at(T0 + timedelta(hours=1), rotate_request="r")
    world.converge()
    p = plan(world.obs)
    assert [t.name for t in p.restarts] == ["api"]
    assert p.restart_token.startswith("2-")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("2024-05-01", "2024-05-01"), ("x" * 200, None), ("ünïcode", None)],
    ids=["short values are kept", "long values are hashed", "non-ascii values are hashed"],
)
def test_request_tokens_are_bounded(value: str, expected: str | None) -> None:
    token = request_token(value)
    if expected is None:
        assert token.startswith("sha256:") and len(token) <= 63
    else:
        assert token == expected


def test_no_key_material_in_status_or_events() -> None:
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(hours=1), revoke_request="v")
    steps = world.converge()
    p = plan(world.obs)
    text = repr(p.status) + repr(p.conditions) + repr([getattr(s, "event", None) for s in steps])
    for doc in (world.obs.store.current,):
        assert doc is not None and doc.key not in text
    assert all(isinstance(v, Mapping) or v is None or isinstance(v, str | int)
               for v in p.status.values())
