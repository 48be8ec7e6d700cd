"""The executor on its own: each planned step is one store or API call, and what the user is
told follows what the status records. An in-memory store built on the backends' own state
transitions, and an in-memory stand-in for the few API calls the reconciler makes."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from apikey_operator.generators.base import MintedKey
from apikey_operator.keys import fingerprint
from apikey_operator.kube import KubeStale, KubeTransient, decode_data
from apikey_operator.reconciler import (
    ReconcileFailed,
    Reconciler,
    Runtime,
    StatusCache,
    delete_from_store,
)
from apikey_operator.stores.base import (
    Capabilities,
    KeyRef,
    StoreConflict,
    StoreState,
    StoreUnavailable,
    VersionDocument,
    promoted,
    promoted_revoking,
    with_initial,
    with_pending,
    without,
)

pytestmark = pytest.mark.unit
T0 = datetime(2026, 6, 1, tzinfo=UTC)
NONE = Capabilities()


class MemoryStore:
    """A store whose every step is the shared pure transition, recording each call."""

    type_name: ClassVar[str] = "memory"
    name = "memory"

    def __init__(self, capabilities: Capabilities = NONE) -> None:
        self.capabilities = capabilities
        self.state = StoreState()
        self.calls: list[str] = []
        self.fail: dict[str, Exception] = {}

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if method in self.fail:
            raise self.fail.pop(method)

    def location(self, ref: KeyRef) -> str:
        return f"memory:{ref.namespace}/{ref.name}"

    async def read(self, ref: KeyRef) -> StoreState:
        self._enter("read")
        return self.state

    async def write_initial(self, ref: KeyRef, document: VersionDocument, *,
                            unread: bool = False) -> VersionDocument:
        self._enter("write_initial")
        if not self.state.owned_by(ref):
            raise StoreConflict("memory entry already exists and belongs to someone else; "
                                "it is left untouched")
        if self.state.current is None:
            self.state = with_initial(self.state, ref, document)
        assert self.state.current is not None
        return self.state.current

    async def write_pending(self, ref: KeyRef, document: VersionDocument) -> VersionDocument:
        self._enter("write_pending")
        if self.state.pending is None:
            self.state = with_pending(self.state, ref, document)
        assert self.state.pending is not None
        return self.state.pending

    async def promote(self, ref: KeyRef, version: int, previous_valid_until: datetime) -> None:
        self._enter("promote")
        self.state = promoted(self.state, version, previous_valid_until, "memory")

    async def promote_revoking_current(self, ref: KeyRef, version: int) -> int | None:
        self._enter("promote_revoking_current")
        old = self.state.current
        self.state = promoted_revoking(self.state, version, "memory")
        return old.version if old else None

    async def revoke(self, ref: KeyRef, version: int) -> None:
        self._enter("revoke")
        self.state = without(self.state, version)

    async def delete(self, ref: KeyRef) -> None:
        self._enter("delete")
        self.state = StoreState()

    async def close(self) -> None:
        return None


@dataclass
class FakeApi:
    """The reconciler's API calls, against one ApiKey object and its Secrets."""

    apikey: dict[str, Any]
    secrets: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 10
    fail_status: list[Exception] = field(default_factory=list)
    status_writes: int = 0
    gets: int = 0
    creates: int = 0

    def _bump(self) -> str:
        self.version += 1
        return str(self.version)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.gets += 1
        return copy.deepcopy(self.secrets.get(name))

    async def create_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.creates += 1
        if body["metadata"]["name"] in self.secrets:
            raise KubeTransient("creating Secret: 409 AlreadyExists", 409)
        return await self._put(body)

    async def _put(self, body: Mapping[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["resourceVersion"] = self._bump()
        self.secrets[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    async def replace_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self._put(body)

    async def get_apikey(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.apikey)

    async def patch_apikey_status(self, namespace: str, name: str, status: Mapping[str, Any],
                                  *, uid: str, has_status: bool,
                                  resource_version: str | None = None) -> str:
        if self.fail_status:
            raise self.fail_status.pop(0)
        if resource_version and resource_version != self.apikey["metadata"]["resourceVersion"]:
            raise KubeStale("changed meanwhile", 422)
        self.status_writes += 1
        current = self.apikey.setdefault("status", {})
        for key, value in status.items():
            if value is None:
                current.pop(key, None)
            else:
                current[key] = copy.deepcopy(value)
        self.apikey["metadata"]["resourceVersion"] = self._bump()
        return self.apikey["metadata"]["resourceVersion"]

    async def restart_workload(self, kind: str, namespace: str, name: str,
                               annotations: Mapping[str, str]) -> bool:
        return False


@dataclass
class Rig:
    store: MemoryStore
    api: FakeApi
    reconciler: Reconciler
    events: list[tuple[str, str, str]]
    clock: list[datetime]

    async def reconcile(self) -> None:
        await self.reconciler.reconcile(copy.deepcopy(self.api.apikey), {}, None)

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.events]

    def annotate(self, **annotations: str) -> None:
        self.api.apikey["metadata"]["annotations"] = {f"apikeys.dev/{k}": v
                                                      for k, v in annotations.items()}

    def at(self, moment: datetime) -> None:
        self.clock[0] = moment


def rig(capabilities: Capabilities = NONE, *, over: Rig | None = None) -> Rig:
    """A reconciler with fresh caches; `over`: on that rig's store and API (a restart)."""
    store = over.store if over else MemoryStore(capabilities)
    api = over.api if over else FakeApi(
        {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
         "metadata": {"name": "billing", "namespace": "payments", "uid": "uid-1",
                      "generation": 1, "resourceVersion": "1"},
         "spec": {"store": "memory"}})
    events: list[tuple[str, str, str]] = []
    clock = [T0]
    runtime = Runtime(stores={"memory": store}, kube=api,  # type: ignore[arg-type]
                      post_event=lambda _body, type_, reason, message: events.append(
                          (type_, str(reason), message)),
                      clock=lambda: clock[0])
    return Rig(store, api, Reconciler(runtime), events, clock)


async def test_a_capable_store_writes_the_first_version_current_in_one_call() -> None:
    r = rig(Capabilities(write_initial=True))
    await r.reconcile()
    # A key never provisioned: no read first, the create is the check (issue 17).
    assert r.store.calls == ["write_initial"]
    assert r.api.apikey["status"]["currentKey"]["version"] == 1
    assert set(r.api.secrets["billing"]["data"]) == {"api-key"}
    assert r.reasons() == ["Provisioned"]


async def test_an_entry_a_crash_left_behind_is_found_by_the_first_write_and_projected() -> None:
    r = rig(Capabilities(write_initial=True))
    await r.reconcile()
    stored = r.store.state.current
    assert stored is not None
    # The crash came after the store write: no Secret, no status; a new process.
    del r.api.secrets["billing"], r.api.apikey["status"]
    r.store.calls.clear()
    r = rig(over=r)
    await r.reconcile()
    assert r.store.calls == ["write_initial", "read"]  # found, then planned from all of it
    assert r.store.state.current == stored and r.store.state.previous is None
    assert r.api.apikey["status"]["currentKey"]["version"] == 1
    assert r.api.apikey["status"]["currentKey"]["fingerprint"] == fingerprint(stored.key)
    assert decode_data(r.api.secrets["billing"]["data"]) == {"api-key": stored.key}


class CountingVendor:
    """A vendor that counts the keys it mints (each one live until revoked there)."""

    type_name: ClassVar[str] = "webhook"
    name = "vendor"

    def __init__(self) -> None:
        self.minted = 0

    async def mint(self, ref: KeyRef, version: int, key_format: Any,
                   scopes: Any) -> MintedKey:
        self.minted += 1
        return MintedKey(f"vendor-key-{self.minted:032d}", external_id=f"id-{self.minted}")

    async def revoke(self, ref: KeyRef, external_id: str) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_foreign_entry_found_by_the_first_write_reads_as_if_read_first() -> None:
    # The status must not depend on which of the two found the entry: a retry reads first
    # (the status then names the store) and must find nothing to rewrite (a corpus failure:
    # StoreConflict keys changed their message on the first retry, seconds later).
    r = rig(Capabilities(write_initial=True))
    r.store.state = StoreState(exists=True, owner_uid="someone-else")
    await r.reconcile()
    assert r.store.calls == ["write_initial", "read"]
    ready = {c["type"]: c for c in r.api.apikey["status"]["conditions"]}["Ready"]
    assert ready["reason"] == "StoreConflict" and "left untouched" in ready["message"]
    writes = r.api.status_writes
    await r.reconcile()
    assert r.store.calls[-1] == "read"
    assert r.api.status_writes == writes
    assert r.store.state == StoreState(exists=True, owner_uid="someone-else")


async def test_a_vendors_key_is_minted_only_after_the_store_is_read() -> None:
    # Skipping the read would mint a vendor key before finding the entry a crash left,
    # and that key would stay live at the vendor with nothing to revoke it.
    r = rig(Capabilities(write_initial=True))
    vendor = CountingVendor()
    r.reconciler.rt.generators = {"vendor": vendor}
    r.api.apikey["spec"]["generator"] = {"webhook": {"name": "vendor"}}
    await r.reconcile()
    assert r.store.calls == ["read", "write_initial"] and vendor.minted == 1
    stored = r.store.state.current
    del r.api.secrets["billing"], r.api.apikey["status"]
    r = rig(over=r)
    r.reconciler.rt.generators = {"vendor": vendor}
    await r.reconcile()
    assert vendor.minted == 1  # the stored key is projected; nothing minted again
    assert r.store.state.current == stored


async def test_a_key_with_a_recorded_store_is_read_before_anything_is_written() -> None:
    r = rig(Capabilities(write_initial=True))
    r.api.apikey["status"] = {"store": "memory"}
    await r.reconcile()
    assert r.store.calls[:2] == ["read", "write_initial"]


async def test_a_plain_store_gets_the_four_steps_one_call_each() -> None:
    r = rig()
    await r.reconcile()
    assert r.store.calls == ["read", "write_pending", "promote"]
    assert r.reasons() == ["Provisioned"]
    await r.reconcile()
    assert r.store.calls[-1] == "read" and r.reasons() == ["Provisioned"]  # nothing twice


async def test_an_event_waits_for_its_status_and_is_posted_once_it_is_written() -> None:
    r = rig(Capabilities(write_initial=True))
    r.api.fail_status.append(KubeTransient("updating status: 500", 500))
    with pytest.raises(ReconcileFailed):
        await r.reconcile()
    assert r.store.state.current is not None  # the step happened...
    assert r.reasons() == []  # ...but the user is told only once the status says so
    await r.reconcile()
    # Still no status: the retry's create finds the entry, which is read and projected.
    assert r.store.calls == ["write_initial", "write_initial", "read"]
    assert r.reasons() == ["Provisioned"]


async def test_an_emergency_revoke_on_a_capable_store_is_one_promote_call() -> None:
    r = rig(Capabilities(write_initial=True, promote_revoking=True))
    await r.reconcile()
    r.at(T0 + timedelta(minutes=5))
    r.annotate(revoke="leak-1")
    await r.reconcile()
    assert r.store.calls[1:] == ["read", "write_pending", "promote_revoking_current"]
    assert list(r.store.state.valid_keys()) == [2]
    assert r.reasons()[-1] == "Revoked" and r.events[-1][2].startswith("key version 1 (sha256:")
    assert set(r.api.secrets["billing"]["data"]) == {"api-key"}


async def test_a_rotation_within_a_grace_writes_nothing_to_the_store_and_says_it_waits() -> None:
    r = rig(Capabilities(write_initial=True))
    await r.reconcile()
    r.at(T0 + timedelta(minutes=1))
    r.annotate(rotate="a")
    await r.reconcile()
    calls = len(r.store.calls)
    r.at(T0 + timedelta(minutes=2))
    r.annotate(rotate="b")
    await r.reconcile()
    assert r.store.calls[calls:] == ["read"]
    assert r.api.apikey["status"]["queuedRotation"]["trigger"] == "rotate"
    assert r.reasons() == ["Provisioned", "Rotated", "RotationQueued"]
    r.at(T0 + timedelta(days=1, minutes=1))
    calls = len(r.store.calls)
    await r.reconcile()
    assert r.store.calls[calls:] == ["read", "revoke", "write_pending", "promote"]
    assert "queuedRotation" not in r.api.apikey["status"]
    assert r.reasons()[-2:] == ["GraceExpired", "Rotated"]


async def test_a_store_outage_is_reported_once_and_the_next_attempt_finishes() -> None:
    r = rig()
    r.store.fail["promote"] = StoreUnavailable("memory: down", retry_after=3.0)
    with pytest.raises(ReconcileFailed) as failed:
        await r.reconcile()
    assert failed.value.retry_after == 3.0
    ready = {c["type"]: c for c in r.api.apikey["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "StoreUnavailable")
    assert r.events == [("Warning", "StoreUnavailable", "memory: down")]
    await r.reconcile()
    assert r.store.calls == ["read", "write_pending", "promote", "read", "promote"]
    assert r.reasons() == ["StoreUnavailable", "Provisioned"]


async def test_the_status_of_its_own_last_write_wins_over_an_older_observed_object() -> None:
    r = rig(Capabilities(write_initial=True))
    stale = copy.deepcopy(r.api.apikey)  # the watch has not delivered our write yet
    await r.reconcile()
    writes = r.api.status_writes
    await r.reconciler.reconcile(stale, {}, None)
    assert r.api.status_writes == writes and r.reasons() == ["Provisioned"]


async def test_a_second_writer_with_an_older_view_records_and_announces_nothing_twice() -> None:
    # Two replicas in the moment both are active: the second plans from the status before the
    # first one's write, and must neither overwrite it nor post its Provisioned again.
    r = rig(Capabilities(write_initial=True))
    before = copy.deepcopy(r.api.apikey)
    await r.reconcile()
    other = Reconciler(replace(r.reconciler.rt, statuses=StatusCache()))
    with pytest.raises(ReconcileFailed):
        await other.reconcile(before, {}, None)
    assert r.reasons() == ["Provisioned"]
    await other.reconcile(copy.deepcopy(r.api.apikey), {}, None)
    assert r.reasons() == ["Provisioned"]


class CountingStale(FakeApi):
    stale: int = 0

    async def patch_apikey_status(self, namespace: str, name: str, status: Mapping[str, Any],
                                  *, uid: str, has_status: bool,
                                  resource_version: str | None = None) -> str:
        try:
            return await super().patch_apikey_status(namespace, name, status, uid=uid,
                                                      has_status=has_status,
                                                      resource_version=resource_version)
        except KubeStale:
            self.stale += 1
            raise


async def test_a_newer_version_the_watch_delivered_is_written_onto_without_a_refusal() -> None:
    # kopf adds its finalizer just after a new key's worker started: the write starts from the
    # version the watch has delivered since, when it shows our status fields as planned.
    r = rig(Capabilities(write_initial=True))
    api = CountingStale(r.api.apikey)
    r.reconciler.rt.kube = api  # type: ignore[assignment]
    snapshot = copy.deepcopy(api.apikey)
    api.apikey["metadata"]["finalizers"] = ["apikeys.dev/finalizer"]
    api.apikey["metadata"]["resourceVersion"] = api._bump()
    r.reconciler.rt.latest = lambda uid: copy.deepcopy(api.apikey) if uid == "uid-1" else None
    await r.reconciler.reconcile(snapshot, {}, None)
    assert api.stale == 0 and api.status_writes == 1
    assert r.reasons() == ["Provisioned"]


async def test_a_newer_version_with_another_writers_status_is_not_written_onto() -> None:
    r = rig(Capabilities(write_initial=True))
    api = CountingStale(r.api.apikey)
    r.reconciler.rt.kube = api  # type: ignore[assignment]
    snapshot = copy.deepcopy(api.apikey)
    api.apikey["status"] = {"observedGeneration": 1, "note": "another replica"}
    api.apikey["metadata"]["resourceVersion"] = api._bump()
    r.reconciler.rt.latest = lambda _uid: copy.deepcopy(api.apikey)
    with pytest.raises(ReconcileFailed):
        await r.reconciler.reconcile(snapshot, {}, None)
    assert api.stale == 1 and api.status_writes == 0
    assert r.reasons() == []


def moving_rig() -> tuple[Rig, MemoryStore]:
    """A key provisioned in store `memory`, with a second configured store `other`."""
    r = rig()
    other = MemoryStore()
    other.name = "other"
    r.reconciler.rt.stores = {"memory": r.store, "other": other}
    return r, other


def move_to(r: Rig, store: str) -> None:
    r.api.apikey["spec"]["store"] = store
    r.api.apikey["metadata"]["generation"] += 1


async def test_a_store_move_is_a_graceful_rotation_that_retires_the_old_entry() -> None:
    r, other = moving_rig()
    await r.reconcile()
    first = r.store.state.current
    assert first is not None and first.version == 1
    r.at(T0 + timedelta(minutes=1))
    move_to(r, "other")
    await r.reconcile()
    # The new key is current in the new store; the old one stays valid in the old store.
    assert other.state.current is not None and other.state.current.version == 2
    assert r.store.state.current == first
    data = r.api.secrets["billing"]["data"]
    assert set(data) == {"api-key", "api-key-previous"}
    status = r.api.apikey["status"]
    assert (status["store"], status["formerStores"]) == ("other", ["memory"])
    assert status["previousKey"]["version"] == 1
    assert r.reasons()[-1] == "Rotated" and "(storeChange)" in r.events[-1][2]
    r.at(T0 + timedelta(days=1, minutes=2))
    await r.reconcile()
    # Grace over: out of the Secret, then the old store's entry is deleted.
    assert not r.store.state.exists and r.store.calls[-1] == "delete"
    assert set(r.api.secrets["billing"]["data"]) == {"api-key"}
    assert "formerStores" not in r.api.apikey["status"]
    assert r.reasons()[-1] == "GraceExpired"


async def test_deleting_an_apikey_mid_move_deletes_its_entry_in_every_store() -> None:
    r, other = moving_rig()
    await r.reconcile()
    move_to(r, "other")
    await r.reconcile()
    assert r.store.state.exists and other.state.exists
    cleanup = await delete_from_store(r.reconciler.rt, copy.deepcopy(r.api.apikey))
    assert not r.store.state.exists and not other.state.exists
    assert cleanup.incomplete == ""


async def test_a_new_keys_secret_is_created_without_reading_it_first() -> None:
    r = rig(Capabilities(write_initial=True))
    await r.reconcile()
    assert r.api.gets == 0 and r.api.creates == 1
    assert set(r.api.secrets["billing"]["data"]) == {"api-key"}


async def test_somebody_elses_secret_is_found_by_the_create_and_never_overwritten() -> None:
    r = rig(Capabilities(write_initial=True))
    foreign = {"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "billing", "namespace": "payments", "resourceVersion": "5"},
               "data": {"password": "aHVudGVyMg=="}}
    r.api.secrets["billing"] = copy.deepcopy(foreign)
    await r.reconcile()
    assert r.api.secrets["billing"] == foreign
    ready = {c["type"]: c for c in r.api.apikey["status"]["conditions"]}["Ready"]
    assert ready["reason"] == "SecretConflict"
    assert (r.api.creates, r.api.gets) == (1, 1)
    await r.reconcile()  # the name is known to be taken now: read, not created again
    assert (r.api.creates, r.api.gets) == (1, 2)
    assert r.api.secrets["billing"] == foreign


async def test_a_store_removed_from_the_config_is_reported_never_forgotten() -> None:
    r, other = moving_rig()
    await r.reconcile()
    move_to(r, "other")
    await r.reconcile()
    # The old store leaves the operator's config mid-grace.
    r.reconciler.rt.stores = {"other": other}
    r.at(T0 + timedelta(minutes=1))
    await r.reconcile()
    status = r.api.apikey["status"]
    assert (status["store"], status["formerStores"]) == ("other", ["memory"])
    cleanup = {c["type"]: c for c in status["conditions"]}["StoreCleanup"]
    assert (cleanup["status"], cleanup["reason"]) == ("False", "StoreCleanupIncomplete")
    assert r.events[-1][:2] == ("Warning", "StoreCleanupIncomplete")
    result = await delete_from_store(r.reconciler.rt, copy.deepcopy(r.api.apikey))
    assert not other.state.exists
    assert "store memory is no longer configured" in result.incomplete


async def test_retain_leaves_every_store_entry_of_a_moved_key() -> None:
    r, other = moving_rig()
    await r.reconcile()
    move_to(r, "other")
    await r.reconcile()
    body = copy.deepcopy(r.api.apikey)
    body["spec"]["deletionPolicy"] = "Retain"
    await delete_from_store(r.reconciler.rt, body)
    assert r.store.state.exists and other.state.exists
    assert "delete" not in r.store.calls + other.calls


async def test_a_rotation_recorded_only_after_its_grace_ended_is_still_announced() -> None:
    r = rig(Capabilities(write_initial=True))
    await r.reconcile()
    r.at(T0 + timedelta(minutes=1))
    r.annotate(rotate="a")
    r.api.fail_status.append(KubeTransient("updating status: 500", 500))
    with pytest.raises(ReconcileFailed):
        await r.reconcile()  # rotated in the store, not recorded
    r.at(T0 + timedelta(days=1, minutes=2))  # the retry comes after the grace has ended
    await r.reconcile()
    assert r.reasons() == ["Provisioned", "Rotated", "GraceExpired"]
    assert "grace of version 1" in r.events[1][2]
