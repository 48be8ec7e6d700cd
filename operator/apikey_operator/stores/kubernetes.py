"""The built-in store: key versions in one Secret per ApiKey in the operator's namespace.

Each version is a data entry `v<N>` holding the VersionDocument JSON; the
pointers, the owner's uid and the handled tokens are one JSON annotation. Every
write is a PUT with the resourceVersion just read, so a concurrent writer gets
a conflict instead of silently losing an update.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from apikey_operator.kube import KubeClient, KubeError, KubeTransient, decode_data, secret_body
from apikey_operator.stores import register
from apikey_operator.stores.base import (
    MANAGED_BY,
    Capabilities,
    KeyRef,
    StoreConfigError,
    StoreError,
    StoreState,
    StoreUnavailable,
    VersionDocument,
    check_owner,
    format_time,
    parse_time,
    promoted,
    promoted_revoking,
    with_initial,
    with_pending,
    without,
)

STATE_ANNOTATION = "apikeys.dev/store-state"
OWNER_ANNOTATION = "apikeys.dev/owner-uid"
APIKEY_ANNOTATION = "apikeys.dev/apikey"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
STORE_LABEL = "apikeys.dev/store"
_MAX_NAME = 253
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _check_ref(ref: KeyRef) -> None:
    """Only names the API server allows reach the derived Secret name (no aliasing)."""
    if (
        not _NAMESPACE.fullmatch(ref.namespace)
        or not _NAME.fullmatch(ref.name)
        or len(ref.name) > _MAX_NAME
    ):
        raise StoreError("the ApiKey's namespace or name is not a valid Kubernetes name")


def store_secret_name(namespace: str, name: str) -> str:
    """`ak.<namespace>.<name>`: injective because namespaces contain no dots; long names are
    cut and suffixed with a hash so the result stays a valid Secret name."""
    full = f"ak.{namespace}.{name}"
    if len(full) <= _MAX_NAME:
        return full
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:16]
    return f"{full[:_MAX_NAME - 17].rstrip('.-')}-{digest}"


class KubernetesStore:
    type_name: ClassVar[str] = "kubernetes"
    capabilities: ClassVar[Capabilities] = Capabilities(write_initial=True,
                                                        promote_revoking=True)

    # Objects this store last read or wrote, so a rotation's later steps need no GET: the
    # PUT carries the cached resourceVersion, and any change in between is a 409. Only
    # reconciles in flight need an entry (each starts with a fresh read), so it stays small.
    RECENT_LIMIT = 256

    def __init__(self, name: str, operator_namespace: str, kube: KubeClient | None = None) -> None:
        self.name = name
        self.namespace = operator_namespace
        self.kube = kube or KubeClient()
        self._recent: OrderedDict[str, dict[str, Any] | None] = OrderedDict()

    def _remember(self, secret_name: str, obj: dict[str, Any] | None) -> None:
        self._recent[secret_name] = obj
        self._recent.move_to_end(secret_name)
        while len(self._recent) > self.RECENT_LIMIT:
            self._recent.popitem(last=False)

    def location(self, ref: KeyRef) -> str:
        return f"kubernetes:{self.namespace}/{store_secret_name(ref.namespace, ref.name)}"

    async def _get(self, ref: KeyRef, *, fresh: bool = False) -> dict[str, Any] | None:
        _check_ref(ref)
        secret_name = store_secret_name(ref.namespace, ref.name)
        if not fresh and secret_name in self._recent:
            return self._recent[secret_name]
        try:
            obj = await self.kube.get_secret(self.namespace, secret_name)
        except KubeTransient as exc:
            raise StoreUnavailable(f"store {self.name}: {exc}", exc.retry_after) from None
        except KubeError as exc:
            raise StoreError(f"store {self.name}: {exc}") from None
        self._remember(secret_name, obj)
        return obj

    async def read(self, ref: KeyRef) -> StoreState:
        return _state_of(await self._get(ref, fresh=True), ref)

    async def _write(self, ref: KeyRef, existing: Mapping[str, Any] | None,
                     data: Mapping[str, str], bookkeeping: Mapping[str, Any], *,
                     taken_ok: bool = False) -> bool:
        """Create (`existing` None) or replace the entry; False when a create found the name
        taken and `taken_ok` says the caller reads it and decides."""
        annotations = {
            STATE_ANNOTATION: json.dumps(bookkeeping, sort_keys=True, separators=(",", ":")),
            OWNER_ANNOTATION: ref.uid,
            APIKEY_ANNOTATION: f"{ref.namespace}/{ref.name}",
        }
        labels = {MANAGED_BY_LABEL: MANAGED_BY, STORE_LABEL: "kubernetes"}
        secret_name = store_secret_name(ref.namespace, ref.name)
        body = secret_body(self.namespace, secret_name, data, labels, annotations, None,
                           existing)
        try:
            if existing is None:
                written = await self.kube.create_secret(body)
            else:
                written = await self.kube.replace_secret(body)
        except KubeError as exc:
            self._recent.pop(secret_name, None)  # stale: the next step reads afresh
            if taken_ok and existing is None and exc.status == 409:
                return False
            if isinstance(exc, KubeTransient):
                raise StoreUnavailable(f"store {self.name}: {exc}", exc.retry_after) from None
            raise StoreError(f"store {self.name}: {exc}") from None
        self._remember(secret_name, written)
        return True

    async def write_initial(self, ref: KeyRef, document: VersionDocument, *,
                            unread: bool = False) -> VersionDocument:
        """Create the entry with `document` as its first current version, in one write.

        Nothing can be lost or revoked early when there is no older key, so the first
        version skips the pending stage. Returns the current version if one exists.
        `unread` (the caller did not read first): the create is the check; an entry that is
        there (ours after a crash, or somebody else's) fails it and is then read afresh.
        """
        _check_ref(ref)
        existing = None if unread else await self._get(ref)
        taken_ok = unread
        while True:
            state = _state_of(existing, ref)
            check_owner(state, ref, self.location(ref))
            if state.current is not None:
                return state.current
            if state.pending is not None:
                raise StoreUnavailable(f"store {self.name}: a pending version appeared; "
                                       "retrying")
            data = decode_data((existing or {}).get("data"))
            data[f"v{document.version}"] = document.to_json()
            if await self._write(ref, existing, data,
                                 _bookkeeping(with_initial(state, ref, document)),
                                 taken_ok=taken_ok):
                return document
            # Taken: once more from what is there, read afresh (a second 409 is an error).
            taken_ok = False
            existing = await self._get(ref, fresh=True)

    async def write_pending(self, ref: KeyRef, document: VersionDocument) -> VersionDocument:
        existing = await self._get(ref)
        state = _state_of(existing, ref)
        check_owner(state, ref, self.location(ref))
        if state.pending is not None:
            return state.pending
        data = decode_data((existing or {}).get("data"))
        data[f"v{document.version}"] = document.to_json()
        await self._write(ref, existing, data, _bookkeeping(with_pending(state, ref, document)))
        return document

    async def promote(self, ref: KeyRef, version: int, previous_valid_until: datetime) -> None:
        existing = await self._get(ref)
        state = _state_of(existing, ref)
        check_owner(state, ref, self.location(ref))
        new_state = promoted(state, version, previous_valid_until, f"store {self.name}")
        if new_state is state:
            return
        await self._write(ref, existing, decode_data((existing or {}).get("data")),
                          _bookkeeping(new_state))

    async def promote_revoking_current(self, ref: KeyRef, version: int) -> int | None:
        """Emergency revoke in one write: pending `version` becomes current and the old
        current is destroyed, with no grace. Returns the revoked version (None if there was
        none). The caller has already removed the old key from the consumer Secret."""
        existing = await self._get(ref)
        state = _state_of(existing, ref)
        check_owner(state, ref, self.location(ref))
        if state.current is not None and state.current.version == version:
            return None  # already done
        new_state = promoted_revoking(state, version, f"store {self.name}")
        data = decode_data((existing or {}).get("data"))
        old = state.current
        if old is not None:
            data.pop(f"v{old.version}", None)
        await self._write(ref, existing, data, _bookkeeping(new_state))
        return old.version if old is not None else None

    async def revoke(self, ref: KeyRef, version: int) -> None:
        existing = await self._get(ref)
        state = _state_of(existing, ref)
        check_owner(state, ref, self.location(ref))
        data = decode_data((existing or {}).get("data"))
        if existing is None or f"v{version}" not in data:
            return
        del data[f"v{version}"]
        await self._write(ref, existing, data, _bookkeeping(without(state, version)))

    async def delete(self, ref: KeyRef) -> None:
        existing = await self._get(ref)
        if existing is None:
            return
        # Ownership only: an entry whose versions cannot be read can still be deleted.
        check_owner(_owner_state(existing), ref, self.location(ref))
        self._recent.pop(store_secret_name(ref.namespace, ref.name), None)
        try:
            await self.kube.delete_secret(self.namespace,
                                          store_secret_name(ref.namespace, ref.name))
        except KubeTransient as exc:
            raise StoreUnavailable(f"store {self.name}: {exc}", exc.retry_after) from None

    async def close(self) -> None:
        await self.kube.close()


def _bookkeeping(state: StoreState) -> dict[str, Any]:
    return {
        "current": state.current.version if state.current else None,
        "previous": state.previous.version if state.previous else None,
        "previousValidUntil": (format_time(state.previous_valid_until)
                               if state.previous_valid_until else None),
        "pending": state.pending.version if state.pending else None,
        "handled": dict(state.handled),
    }


def _owner_state(secret: Mapping[str, Any]) -> StoreState:
    """Who the entry belongs to, read from its metadata alone."""
    meta = secret.get("metadata") or {}
    if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        return StoreState(exists=True, owner_uid="")
    return StoreState(exists=True,
                      owner_uid=str((meta.get("annotations") or {}).get(OWNER_ANNOTATION, "")))


def _state_of(secret: Mapping[str, Any] | None, ref: KeyRef) -> StoreState:
    if secret is None:
        return StoreState()
    meta = secret.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return StoreState(exists=True, owner_uid="")
    owner = str(annotations.get(OWNER_ANNOTATION, ""))
    if owner != ref.uid:
        # Someone else's entry: report the owner, never parse (or trust) its content.
        return StoreState(exists=True, owner_uid=owner)
    try:
        book = json.loads(annotations.get(STATE_ANNOTATION) or "{}")
        if not isinstance(book, dict):
            raise ValueError("not an object")
    except ValueError:
        raise StoreError("the store Secret's bookkeeping annotation is malformed") from None
    data = decode_data(secret.get("data"))

    def version(pointer: str) -> VersionDocument | None:
        number = book.get(pointer)
        if not isinstance(number, int) or f"v{number}" not in data:
            return None
        return VersionDocument.from_json(data[f"v{number}"])

    until = book.get("previousValidUntil")
    previous = version("previous")
    handled = book.get("handled") if isinstance(book.get("handled"), dict) else {}
    return StoreState(
        exists=True,
        owner_uid=owner,
        current=version("current"),
        previous=previous,
        previous_valid_until=parse_time(until) if previous and isinstance(until, str) else None,
        pending=version("pending"),
        handled={str(k): str(v) for k, v in (handled or {}).items()},
    )


@register("kubernetes")
def _factory(name: str, config: Mapping[str, Any], operator_namespace: str,
             kube: KubeClient | None = None) -> KubernetesStore:
    unknown = set(config) - {"type"}
    if unknown:
        raise StoreConfigError(
            f"stores.{name}: unknown field(s) {', '.join(sorted(unknown))} for type kubernetes"
        )
    return KubernetesStore(name, operator_namespace, kube)
