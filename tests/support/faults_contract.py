"""The contract's invariants, checked after convergence against any store.

`StoreProbe` reads what a store holds for one ApiKey straight from the backend
(the built-in store's Secret through kube-apiserver, Vault and AWS through a fresh
store object), independently of the operator under test. `contract_violations`
compares that with the consumer Secret and the ApiKey's status and returns a
description of every broken promise (never key material: fingerprints only).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apikey_operator.keys import fingerprint
from apikey_operator.stores import KeyRef, StoreState, factory_for
from apikey_operator.stores.kubernetes import _state_of, store_secret_name
from apikey_operator.testing.kubeapi import KubeApi

OPERATOR_NAMESPACE = "apikey-operator"
APIKEYS = "apikeys.dev/v1alpha1/apikeys"
SECRETS = "v1/secrets"


class StoreProbe:
    """Reads one configured store's entries the way an auditor would: from the backend."""

    def __init__(
        self, api: KubeApi, store_name: str, config: Mapping[str, Any] | None = None
    ) -> None:
        self.api = api
        self.store_name = store_name
        self.config = dict(config or {"type": "kubernetes"})

    @property
    def kind(self) -> str:
        return str(self.config.get("type", "kubernetes"))

    def state(self, namespace: str, name: str, uid: str) -> StoreState:
        """What the store holds for namespace/name (uid only identifies the caller)."""
        if self.kind == "kubernetes":
            secret = self.api.get_object(
                SECRETS, OPERATOR_NAMESPACE, store_secret_name(namespace, name)
            )
            return _state_of(secret, KeyRef(namespace, name, uid))
        return asyncio.run(self._read_remote(KeyRef(namespace, name, uid)))

    async def _read_remote(self, ref: KeyRef) -> StoreState:
        store = factory_for(self.kind)(self.store_name, self.config, OPERATOR_NAMESPACE)
        try:
            return await store.read(ref)
        finally:
            await store.close()


def decoded_data(secret: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in ((secret or {}).get("data") or {}).items():
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            out[key] = base64.b64decode(value).decode()
    return out


@dataclass(frozen=True)
class Expectation:
    """What a test knows beyond the invariants: the version the key must be at, the old
    key that must still be projected (its grace not over) or must be gone (revoked)."""

    version: int | None = None
    kept_previous: str | None = None
    revoked: str | None = None
    handled_rotate: str | None = None
    handled_revoke: str | None = None


def contract_violations(
    api: KubeApi,
    probe: StoreProbe,
    namespace: str,
    name: str,
    expect: Expectation = Expectation(),
    *,
    secret_name: str | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Every way the converged state of one ApiKey breaks the contract (empty: none)."""
    now = now or datetime.now(UTC)
    where = f"{namespace}/{name}"
    body = api.get_object(APIKEYS, namespace, name)
    if body is None:
        return [f"{where}: the ApiKey is gone"]
    uid = str(body["metadata"]["uid"])
    status = body.get("status") or {}
    secret_name = secret_name or str(
        ((body.get("spec") or {}).get("secret") or {}).get("name") or name
    )
    secret = api.get_object(SECRETS, namespace, secret_name)
    data = decoded_data(secret)
    state = probe.state(namespace, name, uid)
    problems: list[str] = []
    valid = state.valid_keys()
    # Every key the Secret holds is one the store holds as valid (nothing revoked while projected).
    for data_key, value in sorted(data.items()):
        if value not in valid.values():
            problems.append(
                f"{where}: Secret key {data_key!r} ({fingerprint(value)}) is not valid in the store"
            )
    if state.owner_uid and state.owner_uid != uid:
        problems.append(f"{where}: store entry owned by {state.owner_uid}, not {uid}")
    if state.pending is not None:
        problems.append(f"{where}: pending version {state.pending.version} left after convergence")
    current = state.current
    if current is None:
        problems.append(f"{where}: the store has no current version")
        return problems
    projected = data.get("api-key")
    if projected != current.key:
        problems.append(
            f"{where}: the Secret's current key is not the store's current version "
            f"{current.version}"
        )
    status_current = status.get("currentKey") or {}
    if status_current.get("fingerprint") != fingerprint(current.key):
        problems.append(
            f"{where}: status.currentKey.fingerprint "
            f"{status_current.get('fingerprint')} is not the current key's"
        )
    if status_current.get("version") != current.version:
        problems.append(
            f"{where}: status.currentKey.version {status_current.get('version')} "
            f"!= store current {current.version}"
        )
    previous = state.previous
    status_previous = status.get("previousKey") or {}
    if previous is not None and state.previous_valid_until and state.previous_valid_until > now:
        if data.get("api-key-previous") != previous.key:
            problems.append(
                f"{where}: previous version {previous.version} is valid until "
                f"{state.previous_valid_until} but not in the Secret"
            )
        if status_previous.get("fingerprint") != fingerprint(previous.key):
            problems.append(f"{where}: status.previousKey does not name the previous key")
    elif status_previous and status_previous.get("fingerprint"):
        problems.append(f"{where}: status.previousKey set while the store has no valid previous")
    if expect.version is not None and current.version != expect.version:
        problems.append(
            f"{where}: current version {current.version}, expected "
            f"{expect.version} (a trigger acted on more or less than once)"
        )
    if expect.kept_previous is not None and data.get("api-key-previous") != expect.kept_previous:
        problems.append(
            f"{where}: the old key {fingerprint(expect.kept_previous)} was lost "
            "before its grace ended"
        )
    if expect.revoked is not None:
        if expect.revoked in data.values():
            problems.append(f"{where}: the revoked key is still in the Secret")
        if expect.revoked in valid.values():
            problems.append(f"{where}: the revoked key is still valid in the store")
    for field, wanted in (
        ("lastHandledRotate", expect.handled_rotate),
        ("lastHandledRevoke", expect.handled_revoke),
    ):
        if wanted is not None and status.get(field) != wanted:
            problems.append(f"{where}: status.{field} is {status.get(field)!r}, not {wanted!r}")
    return problems


def converged(
    api: KubeApi, namespace: str, name: str, *, version: int | None = None
) -> bool:
    """Ready=True for the current generation (and at `version`, if given)."""
    body = api.get_object(APIKEYS, namespace, name)
    if body is None:
        return False
    status = body.get("status") or {}
    ready: Mapping[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    if ready.get("status") != "True" or ready.get("observedGeneration") != body["metadata"].get(
        "generation"
    ):
        return False
    return version is None or (status.get("currentKey") or {}).get("version") == version
