"""Which store holds which key version of one ApiKey (pure): what a store move plans with.

An ApiKey's versions normally live in one store entry, the one `spec.store` names. A store
move (spec.store changed) is a graceful rotation across two entries: the new key is written
to the new store, the old key stays valid in the old one until its grace ends, and then that
whole entry is deleted. While it lasts, and after a crash anywhere in it, the versions are
spread over several entries. `pool` folds them into the one `StoreState` the rotation state
machine plans with, and remembers where each version lives so each step can be sent there.

Version numbers grow across stores (a move writes the next number after the old store's),
so "the newest current version" says which entry the consumers are on, whatever the spec
says meanwhile: the pool is derived from the stores, never from the spec alone, and that is
what makes every step of a move, and a second move in the middle of one, converge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

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
    origin: Mapping[int, str] = field(default_factory=dict)
    # Entries holding nothing the view uses (an interrupted earlier move): deleted once the
    # Secret no longer holds their keys.
    leftovers: tuple[str, ...] = ()
    # Every entry that exists, by origin: what status.formerStores and deletion are told.
    entries: tuple[str, ...] = ()

    @property
    def active(self) -> str:
        """Where the current version lives."""
        current = self.view.current
        return self.origin.get(current.version, TARGET) if current is not None else TARGET

    def holds_elsewhere(self) -> bool:
        return any(origin != TARGET for origin in self.entries)


def _docs(state: StoreState) -> tuple[VersionDocument, ...]:
    return tuple(d for d in (state.current, state.previous, state.pending) if d is not None)


def pool(ref: KeyRef, target: StoreState, target_location: str,
         elsewhere: tuple[StoreEntry, ...], grace: timedelta) -> Pool:
    """Fold the target entry and this ApiKey's entries elsewhere into one state.

    * current: the newest current version of any entry (where the consumers are);
    * pending: a pending version newer than that, from any entry (an interrupted rotation
      always finishes first: the Secret may already hold it);
    * previous: the current entry's own previous, else the newest current of another
      entry (the old store's key during a move's grace), valid until the move's new
      version was created plus the grace; at once when it was an emergency revoke.
    """
    others = [e for e in elsewhere if e.state.exists and e.state.owned_by(ref)]
    if not others:
        return Pool(target, target_location, entries=(TARGET,) if target.exists else ())
    entries: list[tuple[str, str, StoreState]] = [(TARGET, target_location, target)]
    entries += [(e.name, e.location, e.state) for e in others]

    def newest_current(entry: tuple[str, str, StoreState]) -> int:
        return entry[2].current.version if entry[2].current is not None else 0

    # max() keeps the first of equals: the target wins a tie (nothing to move then).
    active_name, active_location, active = max(entries, key=newest_current)
    current = active.current
    floor = current.version if current is not None else 0
    origin: dict[int, str] = {}
    if current is not None:
        origin[current.version] = active_name
    pendings = [(e[2].pending, e[0]) for e in entries
                if e[2].pending is not None and e[2].pending.version > floor]
    pending = None
    if pendings:
        pending, where = max(pendings, key=lambda p: p[0].version)
        origin[pending.version] = where
    previous, valid_until = active.previous, active.previous_valid_until
    if previous is not None:
        origin[previous.version] = active_name
    elif current is not None:
        older = [(e[2].current, e[0]) for e in entries if e[0] != active_name
                 and e[2].current is not None and e[2].current.version < current.version]
        if older:
            previous, where = max(older, key=lambda p: p[0].version)
            origin[previous.version] = where
            valid_until = current.created_at + (
                timedelta() if current.trigger == "revoke" else grace)
    handled: dict[str, str] = {}
    for _name, _location, state in (*entries[1:], entries[0]):
        handled.update(state.handled)
    handled.update(active.handled)
    view = StoreState(exists=True, owner_uid=ref.uid, current=current, previous=previous,
                      previous_valid_until=valid_until, pending=pending, handled=handled)
    used = set(origin.items())
    leftovers = tuple(name for name, _location, state in entries if state.exists and not any(
        (doc.version, name) in used for doc in _docs(state)))
    return Pool(view, active_location if current is not None else target_location,
                origin, leftovers,
                tuple(name for name, _location, state in entries if state.exists))


def entry_state(target: StoreState, elsewhere: tuple[StoreEntry, ...],
                store: str) -> StoreState:
    """The raw state of the entry a step targets."""
    if store == TARGET:
        return target
    return next((e.state for e in elsewhere if e.name == store), StoreState())


def external_ids(state: StoreState) -> tuple[str, ...]:
    """The vendor ids of every version an entry holds (revoked at the vendor on retire)."""
    return tuple(doc.external_id for doc in _docs(state) if doc.external_id)
