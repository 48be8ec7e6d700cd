"""The benchmark's store wrapper counts calls and hides nothing from the operator."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bench.instrumented_store import InstrumentedStore, StoreStats

from apikey_operator.stores.base import (
    KeyRef,
    StoreState,
    SupportsPromoteRevoking,
    SupportsWriteInitial,
    VersionDocument,
)

pytestmark = pytest.mark.unit
REF = KeyRef(namespace="payments", name="billing", uid="u-1")


class PlainStore:
    """The required Store methods only."""

    name = "plain"

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

    async def write_initial(self, ref: KeyRef, document: VersionDocument) -> VersionDocument:
        return document

    async def promote_revoking_current(self, ref: KeyRef, version: int) -> int | None:
        return version - 1


def test_optional_capabilities_show_exactly_when_the_inner_store_has_them() -> None:
    plain = InstrumentedStore(PlainStore(), StoreStats())  # type: ignore[arg-type]
    capable = InstrumentedStore(CapableStore(), StoreStats())  # type: ignore[arg-type]
    assert not isinstance(plain, SupportsWriteInitial)
    assert not isinstance(plain, SupportsPromoteRevoking)
    assert isinstance(capable, SupportsWriteInitial)
    assert isinstance(capable, SupportsPromoteRevoking)


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
