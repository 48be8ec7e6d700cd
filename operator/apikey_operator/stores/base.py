"""The one small interface every secret-manager backend implements.

A store entry belongs to exactly one ApiKey (namespace, name, uid). It holds
numbered key versions and three pointers, the AWS rotation model:

* ``pending``: written by step 1 (create), not yet promoted;
* ``current``: the key consumers should use;
* ``previous``: the key that was current before the last rotation, valid until
  ``previous_valid_until``; revoked (destroyed) by step 4 (expire).

Every version is stored as a JSON document (`VersionDocument`) so that the
bookkeeping a rotation needs travels with the key, whatever the backend. The
pointers, the owner's uid and the handled trigger tokens live in the backend's
own metadata (a Secret annotation, Vault KV custom metadata, AWS staging
labels and tags).

Every method is idempotent: running it twice has the effect of running it
once, which is what makes a crash between two rotation steps converge.
Writes refuse to touch an entry owned by anybody else (`StoreConflict`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from apikey_operator.keys import KeyFormat

MANAGED_BY = "apikey-operator"


class StoreError(Exception):
    """A store operation failed. Messages never contain key material."""


class StoreUnavailable(StoreError):
    """Transient: timeouts, refused connections, 5xx, throttling, a sealed Vault.

    `retry_after` is the backend's hint in seconds, if it gave one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EntryUnusable(StoreUnavailable):
    """The entry exists but cannot be used now (AWS: scheduled for deletion). A reconcile
    retries; a deletion of the ApiKey removes what it can and ends."""


class StoreCorrupt(StoreError):
    """A stored version cannot be read (a retry will not fix it). A deletion of the ApiKey
    removes what it can and ends."""


class StoreConflict(StoreError):
    """The entry at the derived path was not created for this ApiKey: never touch it."""


class StoreConfigError(StoreError):
    """The store's configuration is invalid; raised at operator start-up."""


@dataclass(frozen=True)
class KeyRef:
    """Which ApiKey an entry belongs to; namespace and name are already validated DNS names."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class VersionDocument:
    """One stored key version: the key and the facts a rotation needs about it."""

    version: int
    key: str = field(repr=False)
    created_at: datetime
    key_format: KeyFormat
    scopes: tuple[str, ...] = ()
    # Request tokens (e.g. {"rotate": "2024-05-01"}) this version answers; recorded with the
    # pending version so a crash after promote cannot make the same request rotate twice.
    handles: Mapping[str, str] = field(default_factory=dict)
    # The vendor's id for a key minted by a webhook generator ("" for keys we generate).
    external_id: str = ""
    # What made this version: initial | schedule | rotate | revoke | format.
    trigger: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {
                "key": self.key,
                "version": self.version,
                "createdAt": format_time(self.created_at),
                "format": {
                    "length": self.key_format.length,
                    "encoding": self.key_format.encoding,
                    "prefix": self.key_format.prefix,
                },
                "scopes": list(self.scopes),
                "handles": dict(self.handles),
                "externalId": self.external_id,
                "trigger": self.trigger,
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> VersionDocument:
        """Parse a stored document; raises StoreError (without the content) when malformed."""
        try:
            data: Any = json.loads(text)
            fmt = data["format"]
            encoding = fmt["encoding"]
            if encoding not in ("base62", "base64url", "hex"):
                raise ValueError("encoding")
            handles = {str(k): str(v) for k, v in dict(data.get("handles", {})).items()}
            # Documents written before `trigger` had its own field kept it among the handles.
            trigger = str(data.get("trigger") or handles.pop("trigger", ""))
            handles.pop("trigger", None)
            return cls(
                version=int(data["version"]),
                key=str(data["key"]),
                created_at=parse_time(str(data["createdAt"])),
                key_format=KeyFormat(
                    length=int(fmt["length"]), encoding=encoding, prefix=str(fmt.get("prefix", ""))
                ),
                scopes=tuple(str(s) for s in data.get("scopes", [])),
                handles=handles,
                external_id=str(data.get("externalId", "")),
                trigger=trigger,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreCorrupt(
                f"a stored key version is malformed ({type(exc).__name__})"
            ) from None


@dataclass(frozen=True)
class StoreState:
    """What a store holds for one ApiKey.

    `exists` is False when there is no entry at the path. `owner_uid` is the uid
    recorded on the entry ("" if the entry carries no managed-by marker).
    """

    exists: bool = False
    owner_uid: str = ""
    current: VersionDocument | None = None
    previous: VersionDocument | None = None
    previous_valid_until: datetime | None = None
    pending: VersionDocument | None = None
    # Trigger tokens answered by promoted versions, e.g. {"rotate": "x", "revoke": "y"}.
    handled: Mapping[str, str] = field(default_factory=dict)

    def owned_by(self, ref: KeyRef) -> bool:
        return not self.exists or (self.owner_uid == ref.uid and bool(ref.uid))

    def valid_keys(self) -> dict[int, str]:
        """Version -> key of every version the store holds as valid (pending included)."""
        docs = (self.current, self.previous, self.pending)
        return {doc.version: doc.key for doc in docs if doc is not None}

    def next_version(self) -> int:
        numbers = [d.version for d in (self.current, self.previous, self.pending) if d]
        return max(numbers, default=0) + 1


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond the four steps, declared by the backend itself (a
    wrapper forwards them; the planner reads them from the observation)."""

    # The first version can be written already current, in one call (`write_initial`).
    write_initial: bool = False
    # Promote pending and destroy the old current in one call (`promote_revoking_current`).
    promote_revoking: bool = False


# The state transitions every backend and the planner share. Each backend encodes the state
# its own way (a Secret annotation, Vault custom metadata, AWS staging labels and tags), but
# what a step does to the state is written once, here.

def answered(state: StoreState, document: VersionDocument) -> dict[str, str]:
    """`handled` once `document` is current: its request tokens join the answered ones."""
    handled = dict(state.handled)
    handled.update(document.handles)
    return handled


def with_initial(state: StoreState, ref: KeyRef, document: VersionDocument) -> StoreState:
    """The entry created with `document` as its first, current version."""
    return replace(state, exists=True, owner_uid=ref.uid, current=document,
                   handled=answered(state, document))


def with_pending(state: StoreState, ref: KeyRef, document: VersionDocument) -> StoreState:
    """Step 1: `document` is pending (the caller keeps an existing pending version)."""
    return replace(state, exists=True, owner_uid=ref.uid, pending=document)


def promoted(state: StoreState, version: int, previous_valid_until: datetime,
             where: str) -> StoreState:
    """Step 3: pending `version` becomes current, the old current previous until
    `previous_valid_until`. Unchanged if `version` is already current."""
    if state.current is not None and state.current.version == version:
        return state
    pending = state.pending
    if pending is None or pending.version != version:
        raise StoreError(f"{where}: version {version} is not the pending version")
    if state.previous is not None:
        raise StoreError(f"{where}: the previous version must be revoked before promoting")
    return replace(state, current=pending, pending=None, previous=state.current,
                   previous_valid_until=previous_valid_until if state.current else None,
                   handled=answered(state, pending))


def promoted_revoking(state: StoreState, version: int, where: str) -> StoreState:
    """Emergency: pending `version` becomes current and the old current is gone at once."""
    after = promoted(state, version, datetime.min.replace(tzinfo=UTC), where)
    return replace(after, previous=None, previous_valid_until=None)


def without(state: StoreState, version: int) -> StoreState:
    """Step 4: `version` destroyed, and whichever pointer named it cleared."""
    if state.previous is not None and state.previous.version == version:
        return replace(state, previous=None, previous_valid_until=None)
    if state.pending is not None and state.pending.version == version:
        return replace(state, pending=None)
    if state.current is not None and state.current.version == version:
        return replace(state, current=None)
    return state


@runtime_checkable
class Store(Protocol):
    """A backend for key versions. Implementations must be safe to call concurrently
    for different ApiKeys; calls for one ApiKey are serialised by the caller."""

    type_name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    name: str

    def location(self, ref: KeyRef) -> str:
        """Where the entry lives, for status.storeRef: a reference a consumer can use as is
        (`apikey_operator.client.ApiKeyProvider.from_reference`), starting with the
        store's type (`kubernetes:`, `vault:`, `aws:`, `azure:`), never its config name."""
        ...

    async def read(self, ref: KeyRef) -> StoreState:
        """The entry's state. Does not check ownership: the caller decides from owner_uid."""
        ...

    async def write_pending(self, ref: KeyRef, document: VersionDocument) -> VersionDocument:
        """Step 1. Store `document` as the pending version and return it; if a pending
        version already exists, return that one unchanged (never a second pending).
        Creates the entry, marked as owned by `ref.uid`, if there is none."""
        ...

    async def promote(self, ref: KeyRef, version: int, previous_valid_until: datetime) -> None:
        """Step 3. Pending `version` becomes current; the old current (if any) becomes
        previous, valid until `previous_valid_until`; the pending version's `handles`
        are merged into `handled`. A no-op if `version` is already current. Requires
        that no previous version exists (the caller expires it first)."""
        ...

    async def revoke(self, ref: KeyRef, version: int) -> None:
        """Step 4 and emergency revoke: destroy `version` so it can never be read again
        and clear whichever pointer named it. A no-op if it is already gone."""
        ...

    async def delete(self, ref: KeyRef) -> None:
        """Remove the whole entry (deletionPolicy Delete). A no-op if there is none."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...



class SupportsWriteInitial(Protocol):
    """A store whose `capabilities.write_initial` is set."""

    async def write_initial(self, ref: KeyRef, document: VersionDocument, *,
                            unread: bool = False) -> VersionDocument:
        """Create the entry with `document` already current; returns the current version
        if one exists. `unread`: the caller did not read the entry first (a key never
        provisioned, whose entry is almost always absent): the write must itself find one
        that is there, read afresh, never from a cache."""
        ...


class SupportsPromoteRevoking(Protocol):
    """A store whose `capabilities.promote_revoking` is set."""

    async def promote_revoking_current(self, ref: KeyRef, version: int) -> int | None:
        """Promote pending `version` and destroy the old current in one write; returns the
        destroyed version."""
        ...


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def check_owner(state: StoreState, ref: KeyRef, where: str) -> None:
    """Raise StoreConflict unless the entry is absent or owned by `ref`."""
    if not state.owned_by(ref):
        who = "another ApiKey" if state.owner_uid else "something other than apikey-operator"
        raise StoreConflict(f"{where} already exists and belongs to {who}; it is left untouched")
