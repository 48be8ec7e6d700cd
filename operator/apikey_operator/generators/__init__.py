"""Key generators behind one Protocol, found by their config `type` (like the stores)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from apikey_operator.generators.base import (
    GeneratorConfigError,
    GeneratorError,
    GeneratorUnavailable,
    KeyGenerator,
    MintedKey,
)
from apikey_operator.registry import Registry

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

# Arguments: the generator's name in the config, its config mapping, the operator's namespace.
GeneratorFactory = Callable[[str, Mapping[str, Any], str], KeyGenerator]

BACKEND_MODULES: Mapping[str, str] = {
    "webhook": "apikey_operator.generators.webhook",
}

_registry: Registry[GeneratorFactory] = Registry("generator", BACKEND_MODULES,
                                                 GeneratorConfigError)
register = _registry.register
factory_for = _registry.factory_for
