"""The benchmark's store wrapper counts calls and hides nothing from the operator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bench.instrumented_store import InstrumentedStore, StoreStats

from apikey_operator.stores.base import Capabilities, KeyRef, StoreState, VersionDocument

pytestmark = pytest.mark.unit
REF = KeyRef(namespace="payments", name="billing", uid="u-1")


class PlainStore:
    """The required Store methods only."""

    name = "plain"
    capabilities = Capabilities()

    def location(self, ref: KeyRef) -> str:
        return f"plain:{ref.namespace}/{ref.name}"

    async def read(self, ref: KeyRef) -> StoreState:
        return StoreState()

    async def write_pending(self, ref: KeyRef, document: VersionDocument) -> VersionDocument:
        return document

    async def promote(self, ref: KeyRef, version: int, previous_valid_until: datetime) -> None:
        return None

    async def revoke(self, ref: KeyRef, version: int) -> None:
        return None

    async def delete(self, ref: KeyRef) -> None:
        return None

    async def close(self) -> None:
        return None


class CapableStore(PlainStore):
    name = "capable"
    capabilities = Capabilities(write_initial=True, promote_revoking=True)

    async def write_initial(self, ref: KeyRef, document: VersionDocument, *,
                            unread: bool = False) -> VersionDocument:
        return document

    async def promote_revoking_current(self, ref: KeyRef, version: int) -> int | None:
        return version - 1


def test_the_wrapper_declares_exactly_the_inner_store_capabilities() -> None:
    plain = InstrumentedStore(PlainStore(), StoreStats())  # type: ignore[arg-type]
    capable = InstrumentedStore(CapableStore(), StoreStats())  # type: ignore[arg-type]
    assert plain.capabilities == Capabilities()
    assert capable.capabilities == Capabilities(write_initial=True, promote_revoking=True)
    assert not hasattr(plain, "write_initial")
    assert hasattr(capable, "promote_revoking_current")


async def test_calls_are_counted_by_method_including_optional_ones() -> None:
    stats = StoreStats()
    store = InstrumentedStore(CapableStore(), stats)  # type: ignore[arg-type]
    await store.read(REF)
    await store.read(REF)
    assert await store.promote_revoking_current(REF, 3) == 2  # type: ignore[attr-defined]
    await store.promote(REF, 2, datetime.now(UTC))
    calls = {c["method"]: c["count"] for c in stats.snapshot()["calls"]}
    assert calls == {"read": 2, "promote_revoking_current": 1, "promote": 1}
    assert stats.snapshot()["in_flight"] == 0
    assert stats.snapshot()["peak_in_flight"] == 1
