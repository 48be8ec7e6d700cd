"""Secret-manager backends behind one Protocol, found by their config `type`.

Backend modules are imported only when a configured store uses them, so the
cloud SDKs (hvac, boto3) are loaded only in their own module and only if needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from apikey_operator.registry import Registry
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

if TYPE_CHECKING:
    from apikey_operator.kube import KubeClient

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


class StoreFactory(Protocol):
    """Validates one store's config block and builds the store (no I/O yet).

    `kube` is the operator's one Kubernetes client, for a store that talks to the API
    server; without it such a store opens its own (tests, CLI commands).
    """

    def __call__(self, name: str, config: Mapping[str, Any], operator_namespace: str,
                 kube: KubeClient | None = None) -> Store: ...


# Config `type` -> module that registers it on import.
BACKEND_MODULES: Mapping[str, str] = {
    "kubernetes": "apikey_operator.stores.kubernetes",
    "vault": "apikey_operator.stores.vault",
    "aws-secrets-manager": "apikey_operator.stores.aws",
    "azure-key-vault": "apikey_operator.stores.azure",
}

_registry: Registry[StoreFactory] = Registry("store", BACKEND_MODULES, StoreConfigError)
register = _registry.register
factory_for = _registry.factory_for
