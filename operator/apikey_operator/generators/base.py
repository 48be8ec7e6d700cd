"""Where key material comes from: the operator itself, or an outside vendor.

A generator mints a key for one ApiKey version and, for vendor keys, revokes it
at the vendor when the version is revoked. `external_id` is the vendor's handle
for the key (never the key); it is stored with the version so a revoke after a
restart still knows what to revoke.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

from apikey_operator.keys import KeyFormat
from apikey_operator.stores.base import KeyRef


class GeneratorError(Exception):
    """The vendor refused (4xx other than throttling). Messages never contain key material."""


class GeneratorUnavailable(GeneratorError):
    """Transient: timeouts, refused connections, 5xx, 429; `retry_after` in seconds if given."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class GeneratorConfigError(GeneratorError):
    """The generator's configuration is invalid; raised at operator start-up."""


@dataclass(frozen=True)
class MintedKey:
    key: str = field(repr=False)
    external_id: str = ""


@runtime_checkable
class KeyGenerator(Protocol):
    type_name: ClassVar[str]
    name: str

    async def mint(self, ref: KeyRef, version: int, key_format: KeyFormat,
                   scopes: Sequence[str]) -> MintedKey:
        """A new key for `ref`. Retrying with the same (ref, version) must not mint twice
        at the vendor if the first call succeeded (send an idempotency key)."""
        ...

    async def revoke(self, ref: KeyRef, external_id: str) -> None:
        """Revoke a minted key at the vendor; a key the vendor no longer knows is success."""
        ...

    async def close(self) -> None:
        ...


class LocalKeys:
    """Keys the operator generates itself (with `secrets`): the source when no vendor is
    configured. Nothing to revoke outside the store."""

    type_name: ClassVar[str] = "local"
    name = "local"

    def __init__(self, generate: Callable[[KeyFormat], str]) -> None:
        self._generate = generate

    async def mint(self, ref: KeyRef, version: int, key_format: KeyFormat,
                   scopes: Sequence[str]) -> MintedKey:
        return MintedKey(self._generate(key_format))

    async def revoke(self, ref: KeyRef, external_id: str) -> None:
        return None

    async def close(self) -> None:
        return None
