"""Key generators behind one Protocol, found by their config `type` (like the stores)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from apikey_operator.generators.base import (
    GeneratorConfigError,
    GeneratorError,
    GeneratorUnavailable,
    KeyGenerator,
    MintedKey,
)

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

_factories: dict[str, GeneratorFactory] = {}


def register(type_name: str) -> Callable[[GeneratorFactory], GeneratorFactory]:
    def decorate(factory: GeneratorFactory) -> GeneratorFactory:
        if type_name in _factories:
            raise RuntimeError(f"generator type {type_name!r} is registered twice")
        _factories[type_name] = factory
        return factory

    return decorate


def factory_for(type_name: str) -> GeneratorFactory:
    if type_name not in _factories:
        module = BACKEND_MODULES.get(type_name)
        if module is None:
            known = ", ".join(sorted(BACKEND_MODULES))
            raise GeneratorConfigError(f"unknown generator type {type_name!r} (known: {known})")
        importlib.import_module(module)
    return _factories[type_name]
