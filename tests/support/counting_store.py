"""A Store wrapper that counts calls per method and can inject failures."""

from __future__ import annotations

import collections
from datetime import datetime
from typing import ClassVar

from apikey_operator.stores.base import (
    Capabilities,
    KeyRef,
    Store,
    StoreError,
    StoreState,
    VersionDocument,
)

METHODS = ("read", "write_pending", "promote", "revoke", "delete", "close")


class CountingStore:
    """Delegates to `inner`, counting every call (`calls["promote"]`), failed ones too.

    `fail_next("promote", StoreUnavailable("down"))` makes the next call(s) of that
    method raise without reaching the inner store: a crash or outage between two
    rotation steps, on demand.
    """

    type_name: ClassVar[str] = "counting"
    # Only the four steps pass through (so every step is counted): no one-call shortcuts.
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self._faults: dict[str, list[StoreError]] = {}

    @property
    def total(self) -> int:
        """Store calls made so far (`close` excluded)."""
        return sum(n for method, n in self.calls.items() if method != "close")

    def reset(self) -> None:
        self.calls.clear()
        self.errors.clear()

    def fail_next(self, method: str, error: StoreError, times: int = 1) -> None:
        if method not in METHODS:
            raise ValueError(f"unknown store method {method!r}")
        self._faults.setdefault(method, []).extend([error] * times)

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        pending = self._faults.get(method)
        if pending:
            self.errors[method] += 1
            raise pending.pop(0)

    def location(self, ref: KeyRef) -> str:
        return self.inner.location(ref)

    async def read(self, ref: KeyRef) -> StoreState:
        self._enter("read")
        try:
            return await self.inner.read(ref)
        except StoreError:
            self.errors["read"] += 1
            raise

    async def write_pending(self, ref: KeyRef, document: VersionDocument) -> VersionDocument:
        self._enter("write_pending")
        try:
            return await self.inner.write_pending(ref, document)
        except StoreError:
            self.errors["write_pending"] += 1
            raise

    async def promote(self, ref: KeyRef, version: int, previous_valid_until: datetime) -> None:
        self._enter("promote")
        try:
            await self.inner.promote(ref, version, previous_valid_until)
        except StoreError:
            self.errors["promote"] += 1
            raise

    async def revoke(self, ref: KeyRef, version: int) -> None:
        self._enter("revoke")
        try:
            await self.inner.revoke(ref, version)
        except StoreError:
            self.errors["revoke"] += 1
            raise

    async def delete(self, ref: KeyRef) -> None:
        self._enter("delete")
        try:
            await self.inner.delete(ref)
        except StoreError:
            self.errors["delete"] += 1
            raise

    async def close(self) -> None:
        self.calls["close"] += 1
        await self.inner.close()
