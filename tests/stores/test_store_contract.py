"""The store contract: every backend behaves the same through the Store Protocol.

Written once, run against each backend in STORE_BACKENDS on real servers.
"""

from __future__ import annotations

import logging
from typing import cast

import pytest

from apikey_operator.keys import KeyFormat
from apikey_operator.stores.base import (
    KeyRef,
    Store,
    StoreConflict,
    StoreError,
    StoreState,
    StoreUnavailable,
    SupportsWriteInitial,
    VersionDocument,
)
from tests.stores.conftest import GRACE_END, new_doc, new_ref
from tests.support.store_backends import StoreBackend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def provision(store: Store, ref: KeyRef) -> VersionDocument:
    written = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, written.version, GRACE_END)
    return written


async def rotate(
    store: Store, ref: KeyRef, handles: dict[str, str] | None = None
) -> VersionDocument:
    state = await store.read(ref)
    written = await store.write_pending(ref, new_doc(state.next_version(), handles=handles))
    await store.promote(ref, written.version, GRACE_END)
    return written


# -- provisioning and the rotation steps ---------------------------------------------------


async def test_an_absent_entry_reads_as_not_existing(backend: StoreBackend) -> None:
    state = await backend.make_store().read(new_ref())
    assert state == StoreState()
    assert state.owned_by(new_ref())


async def test_provisioning_writes_a_pending_key_then_promotes_it(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    document = new_doc(1)

    written = await store.write_pending(ref, document)

    assert written.key == document.key
    assert written.version >= 1
    state = await store.read(ref)
    assert state.exists and state.owner_uid == ref.uid and state.owned_by(ref)
    assert state.pending == written
    assert state.current is None and state.previous is None

    await store.promote(ref, written.version, GRACE_END)

    state = await store.read(ref)
    assert state.current == written
    assert state.pending is None and state.previous is None
    assert state.previous_valid_until is None
    assert state.valid_keys() == {written.version: document.key}


async def test_a_stored_document_keeps_every_field(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    document = new_doc(1, handles={"rotate": "2026-01-01"}, scopes=("a:read", "b:write"),
                       fmt=KeyFormat(length=16, encoding="hex"))

    written = await store.write_pending(ref, document)

    assert (await store.read(ref)).pending == written
    assert written.key == document.key
    assert written.scopes == ("a:read", "b:write")
    assert dict(written.handles) == {"rotate": "2026-01-01"}
    assert written.key_format == KeyFormat(length=16, encoding="hex")
    assert written.created_at == document.created_at


async def test_writing_pending_twice_returns_the_first_pending(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    first = await store.write_pending(ref, new_doc(1))

    second = await store.write_pending(ref, new_doc(1))

    assert second == first
    assert (await store.read(ref)).pending == first


async def test_writing_pending_during_a_rotation_twice_keeps_one_pending(
    backend: StoreBackend,
) -> None:
    store, ref = backend.make_store(), new_ref()
    current = await provision(store, ref)
    first = await store.write_pending(ref, new_doc(2))

    again = await store.write_pending(ref, new_doc(2))

    assert again == first
    state = await store.read(ref)
    assert state.current == current and state.pending == first
    assert first.version > current.version


async def test_promoting_twice_is_a_no_op(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    await provision(store, ref)
    pending = await store.write_pending(ref, new_doc(2, handles={"rotate": "r1"}))
    await store.promote(ref, pending.version, GRACE_END)
    after_first = await store.read(ref)

    await store.promote(ref, pending.version, GRACE_END.replace(year=2027))

    assert await store.read(ref) == after_first


async def test_promoting_the_current_version_again_ignores_a_newer_pending(
    backend: StoreBackend,
) -> None:
    store, ref = backend.make_store(), new_ref()
    current = await provision(store, ref)
    pending = await store.write_pending(ref, new_doc(2))
    before = await store.read(ref)

    await store.promote(ref, current.version, GRACE_END)

    assert await store.read(ref) == before
    assert before.current == current and before.pending == pending


async def test_rotation_moves_current_to_previous_with_its_validity(
    backend: StoreBackend,
) -> None:
    store, ref = backend.make_store(), new_ref()
    old = await provision(store, ref)

    new = await rotate(store, ref, handles={"rotate": "r1"})

    state = await store.read(ref)
    assert state.current == new
    assert state.previous == old
    assert state.previous_valid_until == GRACE_END
    assert state.pending is None
    assert state.handled == {"rotate": "r1"}
    assert state.valid_keys() == {old.version: old.key, new.version: new.key}


async def test_the_trigger_travels_with_its_version_and_answers_no_request(
    backend: StoreBackend,
) -> None:
    # "Promote merges the pending handles into handled" is one rule (stores.base.answered):
    # a backend that kept the trigger among the handled tokens would show here.
    store, ref = backend.make_store(), new_ref()
    old = await provision(store, ref)
    new = await rotate(store, ref, handles={"rotate": "r1"})
    state = await store.read(ref)
    assert state.current is not None and state.current.trigger == new.trigger == "rotate"
    assert state.previous is not None and state.previous.trigger == old.trigger == "initial"
    assert dict(state.handled) == {"rotate": "r1"}


async def test_handled_tokens_accumulate_across_rotations(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    await provision(store, ref)
    first = await rotate(store, ref, handles={"rotate": "r1"})
    await store.revoke(ref, first.version - 1)

    await rotate(store, ref, handles={"revoke": "emergency 1", "rotate": "r2"})

    assert (await store.read(ref)).handled == {"rotate": "r2", "revoke": "emergency 1"}


async def test_revoking_the_previous_key_twice_is_a_no_op(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    old = await provision(store, ref)
    new = await rotate(store, ref)

    await store.revoke(ref, old.version)
    after_first = await store.read(ref)
    await store.revoke(ref, old.version)

    assert await store.read(ref) == after_first
    assert after_first.current == new
    assert after_first.previous is None and after_first.previous_valid_until is None
    assert after_first.valid_keys() == {new.version: new.key}


async def test_revoking_a_pending_key_clears_it(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    current = await provision(store, ref)
    pending = await store.write_pending(ref, new_doc(2))

    await store.revoke(ref, pending.version)

    state = await store.read(ref)
    assert state.pending is None and state.current == current
    replacement = await store.write_pending(ref, new_doc(state.next_version()))
    assert replacement.key != pending.key
    assert replacement.version > current.version
    assert (await store.read(ref)).pending == replacement


async def test_revoking_an_unknown_version_changes_nothing(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    await provision(store, ref)
    before = await store.read(ref)

    await store.revoke(ref, 42)

    assert await store.read(ref) == before


async def test_revoking_or_deleting_an_absent_entry_is_a_no_op(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()

    await store.revoke(ref, 1)
    await store.delete(ref)

    assert (await store.read(ref)).exists is False


async def test_promoting_a_version_that_is_not_pending_fails(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    await provision(store, ref)
    before = await store.read(ref)

    with pytest.raises(StoreError):
        await store.promote(ref, 7, GRACE_END)

    assert await store.read(ref) == before


async def test_promoting_while_a_previous_key_is_valid_fails(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    await provision(store, ref)
    await rotate(store, ref)
    pending = await store.write_pending(ref, new_doc((await store.read(ref)).next_version()))
    before = await store.read(ref)

    with pytest.raises(StoreError):
        await store.promote(ref, pending.version, GRACE_END)

    assert await store.read(ref) == before


# -- crash between steps: a fresh store object sees exactly what the last step left ---------


@pytest.mark.parametrize("steps_done", [1, 2, 3, 4, 5])
async def test_a_fresh_store_resumes_after_a_crash_between_steps(
    backend: StoreBackend, steps_done: int
) -> None:
    ref = new_ref()
    crashed = backend.make_store()
    first = await crashed.write_pending(ref, new_doc(1))
    if steps_done >= 2:
        await crashed.promote(ref, first.version, GRACE_END)
    if steps_done >= 3:
        second = await crashed.write_pending(ref, new_doc(2, handles={"rotate": "r"}))
    if steps_done >= 4:
        await crashed.promote(ref, second.version, GRACE_END)
    if steps_done >= 5:
        await crashed.revoke(ref, first.version)
    seen_before = await crashed.read(ref)

    fresh = backend.make_store()
    state = await fresh.read(ref)

    assert state == seen_before
    # Re-running the step that was done last (the crash hit before it was recorded) is safe.
    if steps_done == 1:
        assert await fresh.write_pending(ref, new_doc(1)) == first
    elif steps_done == 2:
        await fresh.promote(ref, first.version, GRACE_END)
    elif steps_done == 3:
        assert await fresh.write_pending(ref, new_doc(2)) == second
    elif steps_done == 4:
        await fresh.promote(ref, second.version, GRACE_END)
    else:
        await fresh.revoke(ref, first.version)
    assert await fresh.read(ref) == state


# -- delete -----------------------------------------------------------------------------------


async def test_delete_removes_every_version_and_is_idempotent(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    await provision(store, ref)
    await rotate(store, ref)

    await store.delete(ref)
    await store.delete(ref)

    assert await store.read(ref) == StoreState()
    assert backend.snapshot(ref) is None


async def test_an_entry_can_be_provisioned_again_after_delete(backend: StoreBackend) -> None:
    store, ref = backend.make_store(), new_ref()
    await provision(store, ref)
    await store.delete(ref)

    again = await store.write_pending(ref, new_doc(1))

    assert (await store.read(ref)).pending == again


# -- ownership and tenancy ------------------------------------------------------------------


@pytest.mark.parametrize("owner", [None, "another-apikey-uid"], ids=["unmarked", "other-uid"])
async def test_a_foreign_entry_is_reported_and_never_touched(
    backend: StoreBackend, owner: str | None
) -> None:
    store, ref = backend.make_store(), new_ref()
    backend.plant_foreign(ref, owner)
    before = backend.snapshot(ref)

    state = await store.read(ref)

    assert state.exists and not state.owned_by(ref)
    assert state.owner_uid == (owner or "")
    assert state.current is None and state.pending is None and state.previous is None
    with pytest.raises(StoreConflict):
        await store.write_pending(ref, new_doc(1))
    with pytest.raises(StoreConflict):
        await store.promote(ref, 1, GRACE_END)
    with pytest.raises(StoreConflict):
        await store.revoke(ref, 1)
    with pytest.raises(StoreConflict):
        await store.delete(ref)
    assert backend.snapshot(ref) == before


def _writes_initial(store: Store) -> SupportsWriteInitial:
    if not store.capabilities.write_initial:
        pytest.skip(f"{store.type_name} has no write_initial")
    return cast(SupportsWriteInitial, store)


async def test_an_unread_first_write_finds_an_entry_that_is_there_and_keeps_it(
    backend: StoreBackend,
) -> None:
    # A key never provisioned is written without a read first (issue 17): the write itself
    # must find an entry a crash left behind, even one this store object cached as absent.
    ref = new_ref()
    cached_absent = _writes_initial(backend.make_store())
    assert not (await cached_absent.read(ref)).exists
    first = await _writes_initial(backend.make_store()).write_initial(ref, new_doc(1),
                                                                      unread=True)
    again = await cached_absent.write_initial(ref, new_doc(1), unread=True)
    assert again.key == first.key  # the stored key, not the one this write proposed
    state = await backend.make_store().read(ref)
    assert state.current is not None and state.current.key == first.key
    assert state.pending is None and state.previous is None


@pytest.mark.parametrize("owner", [None, "another-apikey-uid"], ids=["unmarked", "other-uid"])
async def test_an_unread_first_write_never_touches_a_foreign_entry(
    backend: StoreBackend, owner: str | None
) -> None:
    store, ref = _writes_initial(backend.make_store()), new_ref()
    backend.plant_foreign(ref, owner)
    before = backend.snapshot(ref)
    with pytest.raises(StoreConflict):
        await store.write_initial(ref, new_doc(1), unread=True)
    assert backend.snapshot(ref) == before


async def test_a_recreated_apikey_does_not_inherit_the_old_entry(backend: StoreBackend) -> None:
    store, old_ref = backend.make_store(), new_ref()
    await provision(store, old_ref)
    before = backend.snapshot(old_ref)
    recreated = new_ref(old_ref.namespace, old_ref.name)

    state = await store.read(recreated)

    assert state.exists and state.owner_uid == old_ref.uid and not state.owned_by(recreated)
    with pytest.raises(StoreConflict):
        await store.write_pending(recreated, new_doc(1))
    with pytest.raises(StoreConflict):
        await store.delete(recreated)
    assert backend.snapshot(old_ref) == before


async def test_same_name_in_two_namespaces_never_meet(backend: StoreBackend) -> None:
    store = backend.make_store()
    in_a, in_b = new_ref("team-a", "shared"), new_ref("team-b", "shared")
    key_a = await provision(store, in_a)
    key_b = await provision(store, in_b)

    assert store.location(in_a) != store.location(in_b)
    assert (await store.read(in_a)).current == key_a
    assert (await store.read(in_b)).current == key_b

    await rotate(store, in_a)
    await store.revoke(in_a, key_a.version)
    await store.delete(in_a)

    assert (await store.read(in_a)).exists is False
    state_b = await store.read(in_b)
    assert state_b.current == key_b and state_b.owned_by(in_b)


@pytest.mark.parametrize(
    "name", ["a", "my.dotted.name", "x" * 63, "a-b.c-d.e" + "-f" * 40],
    ids=["short", "dotted", "long-label", "long-subdomain"],
)
async def test_any_name_the_api_server_allows_gets_its_own_entry(
    backend: StoreBackend, name: str
) -> None:
    store, ref = backend.make_store(), new_ref("ns-1", name)

    written = await provision(store, ref)

    location = store.location(ref).split("?", 1)[0]  # aws: adds ?region=
    entry_name = getattr(backend, "entry_name", None)
    if entry_name is None:
        assert "ns-1" in location and location.endswith(name)
    else:  # a backend that maps names onto a narrower alphabet names the mapped entry
        assert location.endswith(entry_name(ref))
    assert (await store.read(ref)).current == written


@pytest.mark.parametrize(
    ("namespace", "name"),
    [("..", "x"), ("ns", "../../other"), ("ns", "a/b"), ("NS", "x"), ("ns", ""), ("ns", "a..b")],
)
async def test_names_that_could_escape_the_path_are_refused(
    backend: StoreBackend, namespace: str, name: str
) -> None:
    store, ref = backend.make_store(), KeyRef(namespace, name, "uid-1")

    with pytest.raises(StoreError):
        await store.read(ref)
    with pytest.raises(StoreError):
        await store.write_pending(ref, new_doc(1))


# -- outages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["refuse", "hang"])
async def test_an_unreachable_store_is_unavailable_then_recovers(
    backend: StoreBackend, mode: str
) -> None:
    if backend.proxy is None:
        pytest.skip(f"{backend.name} has no outage simulation")
    store, ref = backend.make_store(), new_ref()
    current = await provision(store, ref)
    before = backend.snapshot(ref)

    with backend.proxy.outage(mode):  # type: ignore[arg-type]
        with pytest.raises(StoreUnavailable):
            await store.read(ref)
        with pytest.raises(StoreUnavailable):
            await store.write_pending(ref, new_doc(2))

    # Nothing half-applied, and the same store object works again on its own.
    assert backend.snapshot(ref) == before
    state = await store.read(ref)
    assert state.current == current and state.pending is None
    assert (await store.write_pending(ref, new_doc(2))).version > current.version


async def test_every_step_fails_cleanly_during_an_outage(backend: StoreBackend) -> None:
    if backend.proxy is None:
        pytest.skip(f"{backend.name} has no outage simulation")
    store, ref = backend.make_store(), new_ref()
    old = await provision(store, ref)
    pending = await store.write_pending(ref, new_doc(2))
    before = backend.snapshot(ref)

    with backend.proxy.outage("refuse"):
        with pytest.raises(StoreUnavailable):
            await store.promote(ref, pending.version, GRACE_END)
        with pytest.raises(StoreUnavailable):
            await store.revoke(ref, old.version)
        with pytest.raises(StoreUnavailable):
            await store.delete(ref)

    assert backend.snapshot(ref) == before
    await store.promote(ref, pending.version, GRACE_END)
    assert (await store.read(ref)).current == pending


# -- key material ----------------------------------------------------------------------------


async def test_no_key_reaches_a_log_or_an_error_even_at_debug(
    backend: StoreBackend, caplog: pytest.LogCaptureFixture
) -> None:
    store, ref = backend.make_store(), new_ref()
    caplog.set_level(logging.DEBUG)
    messages: list[str] = []

    first = await store.write_pending(ref, new_doc(1))
    await store.promote(ref, first.version, GRACE_END)
    second = await store.write_pending(ref, new_doc(2))
    await store.promote(ref, second.version, GRACE_END)
    await store.read(ref)
    for failing in (store.promote(ref, 99, GRACE_END),
                    backend.make_store().write_pending(new_ref("Bad", "x"), new_doc(1))):
        try:
            await failing
        except StoreError as exc:
            messages.append(str(exc))
    await store.revoke(ref, first.version)

    assert len(messages) == 2
    text = caplog.text + "\n".join(messages) + repr(await store.read(ref))
    for key in (first.key, second.key):
        assert key not in text


@pytest.mark.parametrize("kind", ["sealed", "throttled", "5xx"])
async def test_a_store_answering_try_later_is_unavailable_then_recovers(
    backend: StoreBackend, kind: str
) -> None:
    # A TLS backend cannot get a forged answer from the proxy: its server answers itself.
    server_answers = getattr(backend, "answering", None)
    answer = getattr(backend, "unavailable_answers", {}).get(kind)
    if server_answers is not None and kind in backend.answer_kinds:  # type: ignore[attr-defined]
        answering = server_answers(kind)
    elif backend.proxy is not None and answer is not None:
        answering = backend.proxy.answering(answer)
    else:
        pytest.skip(f"{backend.name} cannot be made to answer {kind!r} here")
    store, ref = backend.make_store(), new_ref()
    current = await provision(store, ref)
    pending = await store.write_pending(ref, new_doc(2))
    before = backend.snapshot(ref)

    with answering as answered:
        for step in (store.read(ref), store.promote(ref, pending.version, GRACE_END)):
            with pytest.raises(StoreUnavailable) as caught:
                await step
            if kind == "throttled":
                assert caught.value.retry_after
    assert (answered() if callable(answered) else backend.proxy.answered) >= 2  # type: ignore[union-attr]

    assert backend.snapshot(ref) == before
    await store.promote(ref, pending.version, GRACE_END)
    state = await store.read(ref)
    assert (state.current, state.previous) == (pending, current)
