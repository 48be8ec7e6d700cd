"""The pure rotation state machine, driven by a fake clock and an in-memory world."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from apikey_operator import keys
from apikey_operator.conditions import conditions_for, status_for
from apikey_operator.rotation import (
    CreateInitial,
    CreatePending,
    DeleteSecret,
    Observation,
    PolicyView,
    Promote,
    PromoteRevoking,
    Revoke,
    WriteSecret,
    advance,
    plan,
    request_token,
)
from apikey_operator.spec import NamespaceSelector, RotationPolicy, parse_apikey
from apikey_operator.stores.base import Capabilities, KeyRef, StoreState

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
    # (reason, message) of every Event the converged plans posted, in order.
    events: list[tuple[str, str]]

    @classmethod
    def new(cls, **kwargs: Any) -> World:
        kwargs.setdefault("policy", POLICY)
        obs = Observation(now=T0, ref=REF, generation=1, spec=SPEC, store_location="k:x",
                          **kwargs)
        return cls(obs, [], set(), [])

    def reasons(self) -> list[str]:
        return [reason for reason, _ in self.events]

    def step(self) -> Any:
        """Run one step; returns it (None when converged: the status is recorded then)."""
        p = plan(self.obs)
        step = p.step
        if step is None:
            self.events.extend((str(e.reason), e.message) for e in p.events)
            self.obs = replace(self.obs, status=status_for(p, self.obs.status, 1, self.obs.now))
            return None
        written = None
        if isinstance(step, CreateInitial):
            written = self.obs.store.current or step.document(keys.generate(step.key_format))
        if isinstance(step, CreatePending):
            written = self.obs.store.pending or step.document(keys.generate(step.key_format))
        if isinstance(step, Revoke):
            self.revoked.add(step.version)
        if isinstance(step, PromoteRevoking):
            self.revoked.add(step.revokes)
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
    assert world.reasons() == ["Provisioned"]
    final = plan(world.obs)
    assert final.status["currentKey"]["fingerprint"] == keys.fingerprint(current_key(world))
    assert final.wake_at == T0 + timedelta(days=30)
    assert {c.type: c.reason for c in conditions_for(final)}["Ready"] == "Provisioned"
    assert final.events == ()  # recorded once: planning the same state again posts nothing


def test_a_store_that_writes_the_first_version_current_does_it_in_one_step() -> None:
    world = World.new(capabilities=Capabilities(write_initial=True))
    steps = world.converge()
    assert [type(s) for s in steps] == [CreateInitial, WriteSecret]
    assert world.obs.store.current is not None and world.obs.store.current.trigger == "initial"
    assert world.reasons() == ["Provisioned"]


def test_a_first_version_written_by_someone_else_is_still_announced_once() -> None:
    # The write's answer was lost (a crash, a cancelled request, another replica): the next
    # plan finds the key already current, with nothing in status yet.
    world = World.new(capabilities=Capabilities(write_initial=True))
    step = plan(world.obs).step
    assert isinstance(step, CreateInitial)
    world.obs = advance(world.obs, step, step.document(keys.generate(step.key_format)))
    world.converge()
    assert world.reasons() == ["Provisioned"]
    world.converge()
    assert world.reasons() == ["Provisioned"]


def test_schedule_rotates_with_grace_then_expires_the_old_key() -> None:
    world = World.new()
    world.converge()
    old = current_key(world)
    world.at(T0 + timedelta(days=30))
    steps = world.converge()
    assert [type(s) for s in steps] == [CreatePending, WriteSecret, Promote]
    assert world.obs.secret.data[SPEC.previous_key] == old
    assert world.reasons()[-1] == "Rotated"
    assert "version 1 stays valid for 1d" in world.events[-1][1]
    assert plan(world.obs).wake_at == T0 + timedelta(days=31)
    # Before the grace ends nothing happens.
    world.at(T0 + timedelta(days=30, hours=23))
    assert world.converge() == []
    world.at(T0 + timedelta(days=31))
    steps = world.converge()
    assert [type(s) for s in steps] == [WriteSecret, Revoke]
    assert world.reasons()[-1] == "GraceExpired"
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
    assert steps[-1].version == old_version and steps[-1].kind == "emergency"
    assert world.reasons()[-1] == "Revoked"
    assert SPEC.previous_key not in world.obs.secret.data
    assert world.obs.store.previous is None


def test_a_store_that_can_promote_and_revoke_at_once_revokes_in_one_step() -> None:
    world = World.new(capabilities=Capabilities(write_initial=True, promote_revoking=True))
    world.converge()
    world.at(T0 + timedelta(hours=2), revoke_request="now")
    steps = world.converge()
    assert [type(s) for s in steps] == [CreatePending, WriteSecret, PromoteRevoking]
    assert world.revoked == {1} and world.obs.store.previous is None
    assert world.reasons()[-1] == "Revoked"


def test_vendor_keys_are_revoked_one_by_one_so_the_vendor_hears_of_each() -> None:
    world = World.new(capabilities=Capabilities(promote_revoking=True), vendor_keys=True)
    world.converge()
    world.at(T0 + timedelta(hours=2), revoke_request="now")
    steps = world.converge()
    assert [type(s) for s in steps] == [CreatePending, WriteSecret, Promote, Revoke]


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
    assert world.reasons()[-1] == "Revoked"
    assert world.events[-1][1].startswith("key versions 1 (sha256:")
    assert ", 2 (sha256:" in world.events[-1][1]


def test_a_second_rotation_within_a_grace_waits_for_it_to_end() -> None:
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(hours=1), rotate_request="a")
    world.converge()
    first = world.obs.secret.data[SPEC.previous_key]
    world.at(T0 + timedelta(hours=2), rotate_request="b")
    assert world.converge() == []  # no key is lost before its grace ends
    assert world.obs.secret.data[SPEC.previous_key] == first and world.revoked == set()
    assert world.reasons()[-1] == "RotationQueued"
    queued = world.obs.status["queuedRotation"]
    assert queued == {"trigger": "rotate", "requestedAt": "2026-01-01T02:00:00Z",
                      "runsAt": "2026-01-02T01:00:00Z"}
    assert plan(world.obs).wake_at == T0 + timedelta(days=1, hours=1)
    # Asked again later (or re-planned after a restart): still queued, announced once.
    world.at(T0 + timedelta(hours=5))
    assert world.converge() == [] and world.reasons().count("RotationQueued") == 1
    assert world.obs.status["queuedRotation"]["requestedAt"] == "2026-01-01T02:00:00Z"
    world.at(T0 + timedelta(days=1, hours=1))
    steps = world.converge()
    # The grace ends (out of the Secret first), then the queued rotation runs.
    assert [type(s) for s in steps] == [WriteSecret, Revoke, CreatePending, WriteSecret, Promote]
    assert world.revoked == {1}
    assert world.reasons()[-2:] == ["GraceExpired", "Rotated"]
    assert world.obs.status.get("queuedRotation") is None
    assert world.obs.store.handled["rotate"] == "b"


def test_a_schedule_due_within_a_grace_waits_and_shows_when_it_runs() -> None:
    # Only a policy shortened mid-grace can make a rotation due before the grace ends.
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(days=30))
    world.converge()
    hourly = PolicyView("p", True, RotationPolicy("p", timedelta(hours=1), timedelta(minutes=10),
                                                  None))
    world.at(T0 + timedelta(days=30, hours=2), policy=hourly)
    assert world.converge() == []
    queued = world.obs.status["queuedRotation"]
    assert queued == {"trigger": "schedule", "requestedAt": "2026-01-31T01:00:00Z",
                      "runsAt": "2026-02-01T00:00:00Z"}
    assert world.obs.status["nextRotationTime"] == queued["runsAt"]


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
    assert conditions_for(p)[0].reason == "SecretConflict"


def test_a_store_entry_of_another_apikey_is_never_touched() -> None:
    world = World.new()
    world.obs = replace(world.obs, store=StoreState(exists=True, owner_uid="other"))
    p = plan(world.obs)
    assert p.step is None and conditions_for(p)[0].reason == "StoreConflict"


def test_a_namespace_the_policy_does_not_admit_keeps_its_key_and_does_not_rotate() -> None:
    world = World.new()
    world.converge()
    selective = PolicyView("p", True, RotationPolicy(
        "p", timedelta(days=30), timedelta(hours=1), NamespaceSelector({"env": "prod"})))
    world.at(T0 + timedelta(days=40), policy=selective, namespace_labels={"env": "dev"})
    p = plan(world.obs)
    assert p.step is None
    ready = conditions_for(p)[0]
    assert ready.reason == "PolicyNotAllowed" and not ready.status
    assert "key version 1 is kept" in ready.message
    assert p.status["currentKey"]["version"] == 1


def test_a_policy_that_blocks_a_new_key_says_that_no_key_exists_yet() -> None:
    selective = PolicyView("p", True, RotationPolicy(
        "p", timedelta(days=30), timedelta(hours=1), NamespaceSelector({"env": "prod"})))
    world = World.new(policy=selective, namespace_labels={"env": "dev"})
    assert world.converge() == []
    ready = conditions_for(plan(world.obs))[0]
    assert ready.reason == "PolicyNotAllowed" and "no key has been provisioned yet" in ready.message


def test_a_missing_policy_leaves_the_key_valid_and_unscheduled() -> None:
    world = World.new()
    world.converge()
    world.at(T0 + timedelta(days=40), policy=PolicyView("p", False))
    p = plan(world.obs)
    assert p.step is None and p.wake_at is None
    reasons = {c.type: (c.status, c.reason) for c in conditions_for(p)}
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
    reasons = {c.type: c for c in conditions_for(p)}
    assert reasons["Stalled"].reason == "InvalidSpec" and "spec.gracePeriod" in \
        reasons["Stalled"].message


def test_an_invalid_spec_stalls_and_keeps_the_last_known_status() -> None:
    obs = Observation(now=T0, ref=REF, generation=2, spec=None, spec_error="spec.key.length 8",
                      status={"currentKey": {"version": 3}})
    p = plan(obs)
    assert p.step is None and p.blocked
    assert {c.type for c in conditions_for(p)} == {"Ready", "Stalled"}
    assert conditions_for(p)[0].message == "spec.key.length 8; key version 3 stays current"
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
    text = (repr(p.status) + repr(conditions_for(p)) + repr(world.events)
            + repr([getattr(s, "event", None) for s in steps]))
    for doc in (world.obs.store.current,):
        assert doc is not None and doc.key not in text
    assert all(isinstance(v, Mapping) or v is None or isinstance(v, str | int)
               for v in p.status.values())


def test_a_moved_secret_is_written_first_and_the_old_one_deleted_after() -> None:
    world = World.new()
    world.converge()
    key = current_key(world)
    moved = parse_apikey({"metadata": {"name": "billing"},
                          "spec": {"key": {"prefix": "bill_"}, "secret": {"name": "renamed"}}})
    # The new target does not exist yet; the old Secret is still there (and ours).
    world.at(T0 + timedelta(hours=1), spec=moved, stale_secrets=("billing",),
             secret=replace(world.obs.secret, exists=False, data={}))
    steps = world.converge()
    assert [type(s) for s in steps] == [WriteSecret, DeleteSecret]
    assert steps[0].name == "renamed" and steps[0].purpose == "project"
    assert steps[1].name == "billing" and steps[1].event.reason == "SecretRemoved"
    assert world.obs.secret.data[moved.current_key] == key
    assert world.obs.stale_secrets == () and "SecretRestored" not in world.reasons()
