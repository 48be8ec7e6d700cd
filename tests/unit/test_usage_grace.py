"""Usage-aware grace, pure: the batched query, the run of proofs, the early-end decision,
and the rotation core taking the very same expire steps for an early end."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from tests.unit.test_rotation import SPEC, T0, World, current_key

from apikey_operator import keys
from apikey_operator.grace import Answer, KeyUsage, UsageWatch, Verdict, decide, observe, query
from apikey_operator.rotation import (
    GRACE_ENDED_EARLY_ANNOTATION,
    PolicyView,
    Revoke,
    WriteSecret,
    plan,
)
from apikey_operator.spec import EarlyExpiry, RotationPolicy

pytestmark = pytest.mark.unit

CUR, PREV = "sha256:aaaaaaaaaaaa", "sha256:bbbbbbbbbbbb"
WINDOW = timedelta(minutes=5)
EARLY = EarlyExpiry(unused_for=timedelta(minutes=30), minimum_grace=timedelta(hours=1))
EARLY_POLICY = PolicyView("p", True, RotationPolicy("p", timedelta(days=30), timedelta(hours=24),
                                                    None, early_expiry=EARLY))
ROTATED = T0 + timedelta(days=30)
WATCH = UsageWatch(CUR, PREV, valid_until=ROTATED + timedelta(hours=24),
                   grace=timedelta(hours=24), early_expiry=EARLY, in_use_reported=False)


def answer(minutes: float, ok: bool = True, **counts: float) -> Answer:
    by_fp = {{"cur": CUR, "prev": PREV}[k]: v for k, v in counts.items()}
    return Answer(at=ROTATED + timedelta(minutes=minutes), window=WINDOW, ok=ok, counts=by_fp)


def run(*answers: Answer) -> KeyUsage | None:
    usage = None
    for a in answers:
        usage = observe(usage, a, CUR, PREV)
    return usage


# -- the query ---------------------------------------------------------------------------

def test_one_query_covers_every_fingerprint_and_nothing_else() -> None:
    text = query([PREV, CUR, CUR, 'x"}) or vector(1'], WINDOW)
    assert text == ('sum by (fingerprint) (increase(apikey_keyring_verifications_total'
                    '{result="accepted",fingerprint=~"sha256:aaaaaaaaaaaa|sha256:bbbbbbbbbbbb"}'
                    '[300s]))')


# -- proofs and their run ----------------------------------------------------------------

def test_an_answer_with_the_current_key_verified_and_the_previous_not_proves_its_window() -> None:
    usage = run(answer(60, cur=12, prev=0))
    assert usage is not None and usage.unused_since == ROTATED + timedelta(minutes=55)
    assert usage.unused_for == WINDOW and usage.current_verifications == 12


def test_a_previous_key_without_a_series_counts_as_unused_when_the_current_one_reports() -> None:
    usage = run(answer(60, cur=3))
    assert usage is not None and usage.unused_for == WINDOW


@pytest.mark.parametrize("counts", [{}, {"prev": 0}, {"cur": 0, "prev": 0}],
                         ids=["no data at all", "only the previous series",
                              "nobody verified anything"])
def test_without_reports_of_the_current_key_nothing_is_proven(counts: dict[str, float]) -> None:
    usage = run(answer(60, **counts))
    assert usage is not None and usage.unused_since is None


def test_proofs_whose_windows_meet_make_one_run() -> None:
    usage = run(*(answer(60 + m, cur=5, prev=0) for m in range(0, 31)))
    assert usage is not None and usage.unused_for == timedelta(minutes=35)


@pytest.mark.parametrize("breaker", [answer(70, ok=False), answer(70, cur=5, prev=1),
                                     answer(70, prev=0)],
                         ids=["a failed query", "one use of the previous key",
                              "a window without the current key"])
def test_anything_but_a_proof_breaks_the_run(breaker: Answer) -> None:
    usage = run(*(answer(m, cur=5) for m in range(50, 70)), breaker, answer(71, cur=5))
    assert usage is not None and usage.unused_for == WINDOW


def test_a_gap_longer_than_the_window_starts_a_new_run() -> None:
    usage = run(answer(60, cur=5), answer(66, cur=5))
    assert usage is not None and usage.unused_for == WINDOW


# -- the decision --------------------------------------------------------------------------

def usage_for(minutes_unused: float, at_minutes: float, prev: int = 0) -> KeyUsage:
    at = ROTATED + timedelta(minutes=at_minutes)
    return KeyUsage(at=at, window=WINDOW, current_fingerprint=CUR, previous_fingerprint=PREV,
                    current_verifications=40, previous_verifications=prev,
                    unused_since=None if prev else at - timedelta(minutes=minutes_unused))


def test_the_grace_ends_early_when_every_condition_holds() -> None:
    now = ROTATED + timedelta(minutes=61)
    assert decide(now, WATCH, usage_for(30, 61)) == Verdict(end_early=True)


@pytest.mark.parametrize(("now_minutes", "usage", "watch"), [
    (61, None, WATCH),
    (61, usage_for(29, 61), WATCH),
    (59, usage_for(45, 59), WATCH),
    (61, usage_for(30, 55), WATCH),
    (61, replace(usage_for(30, 61), previous_fingerprint="sha256:cccccccccccc"), WATCH),
    (61, usage_for(30, 61), replace(WATCH, early_expiry=None)),
    (24 * 60, usage_for(30, 24 * 60), WATCH),
], ids=["no usage source or answer", "unused for less than unusedFor",
        "before minimumGrace", "an answer older than a window",
        "an answer about another rotation", "a policy without earlyExpiry",
        "the grace is over anyway"])
def test_the_grace_never_ends_early_otherwise(now_minutes: float, usage: KeyUsage | None,
                                              watch: UsageWatch) -> None:
    assert not decide(ROTATED + timedelta(minutes=now_minutes), watch, usage).end_early


def test_previous_key_in_use_is_due_only_in_the_last_tenth_and_once() -> None:
    late = 24 * 60 - 60  # an hour left of 24h: less than a tenth
    assert decide(ROTATED + timedelta(minutes=late), WATCH,
                  usage_for(0, late, prev=7)).report_in_use
    early = 20 * 60
    assert not decide(ROTATED + timedelta(minutes=early), WATCH,
                      usage_for(0, early, prev=7)).report_in_use
    assert not decide(ROTATED + timedelta(minutes=late), replace(WATCH, in_use_reported=True),
                      usage_for(0, late, prev=7)).report_in_use
    assert not decide(ROTATED + timedelta(minutes=late), WATCH,
                      usage_for(30, late)).report_in_use


# -- the rotation core ---------------------------------------------------------------------

def rotated_world() -> World:
    world = World.new(policy=EARLY_POLICY)
    world.converge()
    world.at(ROTATED)
    world.converge()
    assert world.reasons()[-1] == "Rotated"
    return world


def proven(world: World, minutes_after_rotation: float, unused: float = 30,
           prev: int = 0) -> KeyUsage:
    store = world.obs.store
    assert store.current is not None and store.previous is not None
    at = ROTATED + timedelta(minutes=minutes_after_rotation)
    return KeyUsage(at=at, window=WINDOW,
                    current_fingerprint=keys.fingerprint(store.current.key),
                    previous_fingerprint=keys.fingerprint(store.previous.key),
                    current_verifications=40, previous_verifications=prev,
                    unused_since=None if prev else at - timedelta(minutes=unused))


def test_an_early_end_takes_the_expire_steps_secret_first_and_says_why() -> None:
    world = rotated_world()
    old_version = world.obs.store.previous.version  # type: ignore[union-attr]
    usage = proven(world, 61)
    world.at(ROTATED + timedelta(minutes=61), usage=usage)
    steps = world.converge()
    assert [type(s) for s in steps] == [WriteSecret, Revoke]
    assert steps[0].purpose == "expire"
    assert steps[0].annotations[GRACE_ENDED_EARLY_ANNOTATION] == str(old_version)
    assert world.revoked == {old_version}
    assert SPEC.previous_key not in world.obs.secret.data
    reason, message = world.events[-1]
    assert reason == "GraceEndedEarly"
    assert "revoked 22h59m before its grace end" in message
    assert "no consumer verified it for 30m" in message
    assert "verified 40 times in the last 5m" in message
    assert "GraceExpired" not in world.reasons()


def test_a_crash_between_the_two_halves_of_an_early_end_finishes_the_revoke() -> None:
    world = rotated_world()
    world.at(ROTATED + timedelta(minutes=61), usage=proven(world, 61))
    first = world.step()
    assert isinstance(first, WriteSecret)
    # The restart loses the usage run (in memory) and the status write; the Secret says it.
    world.at(ROTATED + timedelta(minutes=62), usage=None)
    world.obs = replace(world.obs, status={})
    steps = world.converge()
    assert [type(s) for s in steps] == [Revoke]
    assert world.obs.store.previous is None


def test_without_the_annotation_a_secret_missing_the_previous_key_gets_it_back() -> None:
    # Someone else removed the key: that is drift to repair, not an early end.
    world = rotated_world()
    data = {SPEC.current_key: current_key(world)}
    world.at(ROTATED + timedelta(minutes=61),
             secret=replace(world.obs.secret, data=data, annotations={}))
    steps = world.converge()
    assert [type(s) for s in steps] == [WriteSecret]
    assert SPEC.previous_key in world.obs.secret.data


def test_no_early_end_while_the_old_key_is_used_and_a_warning_near_the_end() -> None:
    world = rotated_world()
    world.at(ROTATED + timedelta(hours=12), usage=proven(world, 12 * 60, prev=3))
    assert world.converge() == []
    assert "PreviousKeyInUse" not in world.reasons()
    near = 23 * 60
    world.at(ROTATED + timedelta(minutes=near), usage=proven(world, near, prev=5))
    assert world.converge() == []
    reason, message = world.events[-1]
    assert reason == "PreviousKeyInUse"
    assert "verified 5 times in the last 5m" in message
    assert world.obs.status["previousKey"]["inUseReportedAt"]
    # Once per grace: planning again (or later in the same grace) posts nothing more.
    world.at(ROTATED + timedelta(minutes=near + 10), usage=proven(world, near + 10, prev=9))
    world.converge()
    assert world.reasons().count("PreviousKeyInUse") == 1
    assert plan(world.obs).usage_watch is not None
    assert plan(world.obs).usage_watch.in_use_reported  # type: ignore[union-attr]
    # The deadline holds: the grace ends on time, as any other.
    world.at(ROTATED + timedelta(hours=24), usage=proven(world, 24 * 60, prev=9))
    assert [type(s) for s in world.converge()] == [WriteSecret, Revoke]
    assert world.reasons()[-1] == "GraceExpired"


def test_a_policy_without_early_expiry_never_ends_a_grace_early() -> None:
    world = World.new()
    world.converge()
    world.at(ROTATED)
    world.converge()
    world.at(ROTATED + timedelta(hours=2), usage=proven(world, 120, unused=110))
    assert world.converge() == []
    assert world.obs.store.previous is not None


def test_a_key_in_its_grace_is_watched_and_one_without_is_not() -> None:
    world = World.new(policy=EARLY_POLICY)
    world.converge()
    assert plan(world.obs).usage_watch is None
    world.at(ROTATED)
    world.converge()
    watch = plan(world.obs).usage_watch
    assert watch is not None and watch.early_expiry == EARLY
    assert watch.previous_fingerprint != watch.current_fingerprint
    assert watch.valid_until == ROTATED + timedelta(hours=24)


def test_an_emergency_revoke_is_not_watched_and_ignores_the_annotation() -> None:
    world = rotated_world()
    world.at(ROTATED + timedelta(minutes=5), revoke_request="leak")
    world.converge()
    assert plan(world.obs).usage_watch is None
    assert world.reasons()[-1] == "Revoked"
