"""Which store holds which key version of one ApiKey (pure): what a store move plans with.

An ApiKey's versions normally live in one store entry, the one `spec.store` names. A store
move (spec.store changed) is a graceful rotation across two entries: the new key is written
to the new store, the old key stays valid in the old one until its grace ends, and then that
whole entry is deleted. While it lasts, and after a crash anywhere in it, the versions are
spread over several entries. `pool` folds them into the one `StoreState` the rotation state
machine plans with, and remembers where each version lives so each step can be sent there.

Which entry holds the current key comes from the status (status.store, status.formerStores,
written with every change they describe) plus the one thing a crash can leave unrecorded:
what the move itself wrote in the new store. That is what makes every step of a move, and a
second move in the middle of one, converge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from apikey_operator.keys import fingerprint
from apikey_operator.stores.base import KeyRef, StoreState, VersionDocument

# The origin of a version in the ApiKey's own store (the one spec.store names).
TARGET = ""


@dataclass(frozen=True)
class StoreEntry:
    """This ApiKey's entry in a configured store other than the one spec.store names."""

    name: str
    location: str
    state: StoreState


@dataclass(frozen=True)
class Pool:
    """The merged view and where each of its versions lives (`TARGET` or a store name)."""

    view: StoreState
    location: str
    current_at: str = TARGET
    previous_at: str = TARGET
    pending_at: str = TARGET
    # Entries holding nothing the view uses (an interrupted earlier move): deleted once the
    # Secret no longer holds their keys.
    leftovers: tuple[str, ...] = ()
    # Every entry that exists, by origin: what status.formerStores and deletion are told.
    entries: tuple[str, ...] = ()

    @property
    def active(self) -> str:
        """Where the current version lives."""
        return self.current_at


def _docs(state: StoreState) -> tuple[VersionDocument, ...]:
    return tuple(d for d in (state.current, state.previous, state.pending) if d is not None)


def pool(ref: KeyRef, target: StoreState, target_location: str,
         elsewhere: tuple[StoreEntry, ...], grace: timedelta, *,
         recorded: str | None = None, current_fingerprint: str = "",
         current_created: datetime | None = None, previous_fingerprint: str = "",
         previous_until: datetime | None = None, now: datetime | None = None) -> Pool:
    """Fold the target entry and this ApiKey's entries elsewhere into one state.

    Version numbers cannot tell the entries apart (Vault numbers its versions itself, so a
    moved key may be version 1 again); the status can, with one gap a crash may leave:
    `recorded` (status.store: where the current key was when the status was last written,
    as a name in `elsewhere`, or `TARGET`) and the fingerprints (and the current key's
    creation time) status.currentKey and status.previousKey show.

    * current: the target's, when the status shows it as current, or when the status never
      showed it and it is no older than the key the status shows as current (then only this
      move can have written it: its new key, promoted before the status said so); else the
      recorded store's (the target holds the previous key of an earlier move, or a leftover);
    * pending: the current entry's own, else the target's while it holds nothing else (the
      move's new key, written before the status said so): an interrupted rotation always
      finishes first, the Secret may already hold it;
    * previous: the current entry's own, else the current key of another entry (the status's
      previous key if it is one of them), valid until the status says (`previous_until`),
      or, until the status shows it as the previous key, for the grace from `now`: the grace
      starts when the move is first recorded, so no crash or outage shortens it; at once
      after an emergency revoke.
    """
    others = {e.name: e for e in elsewhere if e.state.exists and e.state.owned_by(ref)}
    if not others:
        return Pool(target, target_location, entries=(TARGET,) if target.exists else ())
    states = {TARGET: target, **{name: e.state for name, e in others.items()}}
    locations = {TARGET: target_location, **{name: e.location for name, e in others.items()}}
    with_current = [name for name, state in states.items() if state.current is not None]
    if target.current is not None and (
            recorded in (None, TARGET) or recorded not in states
            or _newer(target.current, current_fingerprint, current_created,
                      previous_fingerprint)):
        current_at = TARGET
    elif recorded is not None and recorded in states and states[recorded].current is not None:
        current_at = recorded
    elif with_current:
        current_at = max(with_current, key=lambda n: _created(states[n]))
    else:
        current_at = TARGET
    active = states[current_at]
    current = active.current
    pending, pending_at = active.pending, current_at
    if pending is None and current_at != TARGET and target.current is None:
        pending, pending_at = target.pending, TARGET
    previous, previous_at = active.previous, current_at
    valid_until = active.previous_valid_until
    if previous is None and current is not None:
        candidates = [n for n in with_current if n != current_at]
        if candidates:
            previous_at = next(
                (n for n in candidates
                 if fingerprint(_current(states[n]).key) == previous_fingerprint),
                recorded if recorded in candidates else max(
                    candidates, key=lambda n: _created(states[n])))
            previous = states[previous_at].current
            assert previous is not None and now is not None
            if current.trigger == "revoke":
                valid_until = now
            elif previous_until is not None and fingerprint(previous.key) == previous_fingerprint:
                valid_until = previous_until
            else:
                valid_until = now + grace
    handled: dict[str, str] = {}
    for name, state in states.items():
        if name != current_at:
            handled.update(state.handled)
    handled.update(active.handled)
    view = StoreState(exists=True, owner_uid=ref.uid, current=current, previous=previous,
                      previous_valid_until=valid_until, pending=pending, handled=handled)
    used = {current_at if current else None, previous_at if previous else None,
            pending_at if pending else None}
    leftovers = tuple(n for n, state in states.items() if state.exists and n not in used)
    return Pool(view, locations[current_at] if current is not None else target_location,
                current_at, previous_at, pending_at, leftovers,
                tuple(n for n, state in states.items() if state.exists))


def _newer(doc: VersionDocument, current_fingerprint: str, current_created: datetime | None,
           previous_fingerprint: str) -> bool:
    """Whether `doc` is the key the status shows as current, or one written after it."""
    shown = fingerprint(doc.key)
    if shown == current_fingerprint:
        return True
    if shown == previous_fingerprint:
        return False
    return current_created is None or doc.created_at >= current_created


def _created(state: StoreState) -> datetime:
    return _current(state).created_at


def _current(state: StoreState) -> VersionDocument:
    assert state.current is not None
    return state.current


def entry_state(target: StoreState, elsewhere: tuple[StoreEntry, ...],
                store: str) -> StoreState:
    """The raw state of the entry a step targets."""
    if store == TARGET:
        return target
    return next((e.state for e in elsewhere if e.name == store), StoreState())


def external_ids(state: StoreState) -> tuple[str, ...]:
    """The vendor ids of every version an entry holds (revoked at the vendor on retire)."""
    return tuple(doc.external_id for doc in _docs(state) if doc.external_id)
