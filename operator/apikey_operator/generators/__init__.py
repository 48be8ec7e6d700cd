"""Key generators behind one Protocol, found by their config `type` (like the stores)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from apikey_operator.generators.base import (
    GeneratorConfigError,
    GeneratorError,
    GeneratorUnavailable,
    KeyGenerator,
    MintedKey,
)
from apikey_operator.registry import Registry

if TYPE_CHECKING:
    from apikey_operator.kube import KubeClient

__all__ = [
    "GeneratorConfigError",
    "GeneratorError",
    "GeneratorFactory",
    "GeneratorUnavailable",
    "KeyGenerator",
    "MintedKey",
    "factory_for",
    "register",
]


class GeneratorFactory(Protocol):
    """Validates one generator's config block and builds it (no I/O yet); `kube` as for
    stores (the webhook generator reads its token Secret through it)."""

    def __call__(self, name: str, config: Mapping[str, Any], operator_namespace: str,
                 kube: KubeClient | None = None) -> KeyGenerator: ...


BACKEND_MODULES: Mapping[str, str] = {
    "webhook": "apikey_operator.generators.webhook",
}

_registry: Registry[GeneratorFactory] = Registry("generator", BACKEND_MODULES,
                                                 GeneratorConfigError)
register = _registry.register
factory_for = _registry.factory_for
