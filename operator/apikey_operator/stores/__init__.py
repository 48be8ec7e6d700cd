"""Secret-manager backends behind one Protocol, found by their config `type`.

Backend modules are imported only when a configured store uses them, so the
cloud SDKs (hvac, boto3) are loaded only in their own module and only if needed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from apikey_operator.stores.base import (
    KeyRef,
    Store,
    StoreConfigError,
    StoreConflict,
    StoreError,
    StoreState,
    StoreUnavailable,
    VersionDocument,
)

__all__ = [
    "BACKEND_MODULES",
    "KeyRef",
    "Store",
    "StoreConfigError",
    "StoreConflict",
    "StoreError",
    "StoreFactory",
    "StoreState",
    "StoreUnavailable",
    "VersionDocument",
    "factory_for",
    "register",
]

# A factory validates one store's config block and builds the store.
# Arguments: the store's name in the config, its config mapping, the operator's namespace.
StoreFactory = Callable[[str, Mapping[str, Any], str], Store]

# Config `type` -> module that registers it on import.
BACKEND_MODULES: Mapping[str, str] = {
    "kubernetes": "apikey_operator.stores.kubernetes",
    "vault": "apikey_operator.stores.vault",
    "aws-secrets-manager": "apikey_operator.stores.aws",
}

_factories: dict[str, StoreFactory] = {}


def register(type_name: str) -> Callable[[StoreFactory], StoreFactory]:
    """Register the factory for a config `type`; a second registration is a bug."""

    def decorate(factory: StoreFactory) -> StoreFactory:
        if type_name in _factories:
            raise RuntimeError(f"store type {type_name!r} is registered twice")
        _factories[type_name] = factory
        return factory

    return decorate


def factory_for(type_name: str) -> StoreFactory:
    """The factory for a config `type`, importing its module on first use."""
    if type_name not in _factories:
        module = BACKEND_MODULES.get(type_name)
        if module is None:
            known = ", ".join(sorted(BACKEND_MODULES))
            raise StoreConfigError(f"unknown store type {type_name!r} (known: {known})")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise StoreConfigError(
                f"store type {type_name!r} needs a package that is not installed: {exc.name}"
            ) from None
    return _factories[type_name]
