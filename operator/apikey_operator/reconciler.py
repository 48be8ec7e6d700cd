"""Gather -> plan -> apply for one ApiKey: the I/O around the pure state machine."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from apikey_operator import crashpoints, keys, metrics, rotation
from apikey_operator.conditions import Condition, build_conditions, condition_of
from apikey_operator.generators import GeneratorError, GeneratorUnavailable, KeyGenerator
from apikey_operator.kube import KubeClient, KubeError, KubeTransient, decode_data, secret_body
from apikey_operator.rotation import (
    CreatePending,
    Observation,
    PolicyView,
    Promote,
    Revoke,
    SecretView,
    WriteSecret,
)
from apikey_operator.spec import (
    GROUP,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REVOKE_ANNOTATION,
    ROTATE_ANNOTATION,
    VERSION,
    ApiKeySpec,
    SpecError,
    parse_apikey,
    parse_policy,
)
from apikey_operator.stores import KeyRef, Store, StoreConflict, StoreError, StoreUnavailable
from apikey_operator.stores.base import (
    SupportsPromoteRevoking,
    SupportsWriteInitial,
    VersionDocument,
    parse_time,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
MAX_STEPS = 16
EventPoster = Callable[[Mapping[str, Any], str, str, str], None]


class SecretCache:
    """The operator's consumer Secrets as its watch and its own writes last showed them.

    Saves a GET per reconcile. A stale entry cannot cause harm: every write is a PUT
    with the cached resourceVersion, so a change in between is a 409, the entry is
    dropped, and the retry reads afresh. Entries are replaced only by newer versions.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[int, dict[str, Any] | None]] = {}

    @staticmethod
    def _version(obj: Mapping[str, Any]) -> int | None:
        raw = (obj.get("metadata") or {}).get("resourceVersion")
        return int(raw) if isinstance(raw, str) and raw.isdigit() else None

    def lookup(self, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        """(known, object): known is False when only a GET can tell."""
        entry = self._entries.get((namespace, name))
        if entry is None:
            return False, None
        return True, copy.deepcopy(entry[1])

    def observed(self, obj: Mapping[str, Any], *, deleted: bool = False) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        version = self._version(obj)
        if version is None:
            self._entries.pop(key, None)
            return
        current = self._entries.get(key)
        if current is None or version >= current[0]:
            self._entries[key] = (version, None if deleted else copy.deepcopy(dict(obj)))

    def forget(self, namespace: str, name: str) -> None:
        self._entries.pop((namespace, name), None)

    def holds(self, obj: Mapping[str, Any]) -> bool:
        """Whether this exact version is already known (e.g. the echo of our own write)."""
        meta = obj.get("metadata") or {}
        entry = self._entries.get((str(meta.get("namespace")), str(meta.get("name"))))
        return entry is not None and entry[1] is not None and entry[0] == self._version(obj)


@dataclass
class Runtime:
    """What every reconcile shares: stores, the API client, limits, the clock."""

    stores: Mapping[str, Store]
    kube: KubeClient
    post_event: EventPoster
    generators: Mapping[str, KeyGenerator] = field(default_factory=dict)
    secrets: SecretCache = field(default_factory=SecretCache)
    store_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    generate_key: Callable[[keys.KeyFormat], str] = keys.generate
    on_key_seen: Callable[[str], None] = lambda _key: None


@dataclass(frozen=True)
class Outcome:
    wake_at: datetime | None
    blocked: bool
    secret_digest: str
    # The status as this reconcile left it: the next reconcile starts from it, because the
    # watch event carrying our own patch may not have arrived yet.
    status: Mapping[str, Any]


class ReconcileFailed(Exception):
    """Reconcile stopped early; the status already says why. `retry_after` hints the backoff."""

    def __init__(self, message: str, retry_after: float | None = None,
                 status: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


def secret_digest(data: Mapping[str, Any] | None) -> str:
    """A digest of a Secret's raw data to tell our own writes from somebody else's edits."""
    items = sorted((str(k), str(v)) for k, v in (data or {}).items())
    return hashlib.sha256(repr(items).encode()).hexdigest()


def owner_reference(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApiKey", "name": meta["name"],
            "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}


def _secret_view(obj: Mapping[str, Any] | None) -> SecretView:
    if obj is None:
        return SecretView()
    meta = obj.get("metadata") or {}
    owner = ""
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller") and ref.get("kind") == "ApiKey":
            owner = str(ref.get("uid", ""))
    return SecretView(
        exists=True,
        owner_uid=owner,
        managed=(meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY,
        data=decode_data(obj.get("data")),
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
    )


def policy_view(name: str | None, policies: Mapping[str, Mapping[str, Any]]) -> PolicyView | None:
    if name is None:
        return None
    body = policies.get(name)
    if body is None:
        return PolicyView(name=name, found=False)
    try:
        return PolicyView(name=name, found=True, policy=parse_policy(body))
    except SpecError as exc:
        return PolicyView(name=name, found=True, error=str(exc))


class Reconciler:
    """Reconciles one ApiKey at a time (the caller serialises calls per key)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def _store_call(self, store: Store, operation: str, call: Awaitable[T]) -> T:
        async with self.rt.store_slots:
            try:
                return await call
            except StoreError:
                metrics.STORE_ERRORS.labels(store.name, operation).inc()
                raise

    async def reconcile(
        self,
        body: Mapping[str, Any],
        policies: Mapping[str, Mapping[str, Any]],
        namespace_labels: Mapping[str, str] | None,
    ) -> Outcome:
        started = self.rt.clock()
        with metrics.RECONCILE_DURATION.time():
            return await self._reconcile(body, policies, namespace_labels, started)

    async def _reconcile(
        self,
        body: Mapping[str, Any],
        policies: Mapping[str, Mapping[str, Any]],
        namespace_labels: Mapping[str, str] | None,
        now: datetime,
    ) -> Outcome:
        meta = body.get("metadata") or {}
        ref = KeyRef(namespace=str(meta.get("namespace")), name=str(meta.get("name")),
                     uid=str(meta.get("uid", "")))
        # Objects that skipped schema validation may carry anything: never trust shapes.
        status: Mapping[str, Any] = _as_mapping(body.get("status"))
        raw_generation = meta.get("generation")
        generation = raw_generation if isinstance(raw_generation, int) else 0
        annotations = _as_mapping(meta.get("annotations"))
        spec: ApiKeySpec | None = None
        spec_error = store_error = None
        try:
            spec = parse_apikey(body)
        except SpecError as exc:
            spec_error = str(exc)
        store = None
        generator = None
        if spec is not None:
            store = self.rt.stores.get(spec.store)
            if store is None:
                configured = ", ".join(sorted(self.rt.stores))
                store_error = (f"spec.store {spec.store!r} is not a configured store "
                               f"(configured: {configured})")
            if spec.generator is not None:
                generator = self.rt.generators.get(spec.generator)
                if generator is None:
                    configured = ", ".join(sorted(self.rt.generators)) or "none"
                    store_error = (f"spec.generator.webhook.name {spec.generator!r} is not a "
                                   f"configured generator (configured: {configured})")
                    store = None
        obs = Observation(
            now=now, ref=ref, generation=generation, spec=spec, spec_error=spec_error,
            store_error=store_error, status=status,
            policy=policy_view(spec.policy_name if spec else None, policies),
            namespace_labels=namespace_labels,
            rotate_request=_token(annotations.get(ROTATE_ANNOTATION)),
            revoke_request=_token(annotations.get(REVOKE_ANNOTATION)),
        )
        secret_obj: dict[str, Any] | None = None
        try:
            if spec is not None and store is not None:
                obs = replace(obs, store_location=store.location(ref))
                state = await self._store_call(store, "read", store.read(ref))
                for doc in (state.current, state.previous, state.pending):
                    if doc is not None:
                        self.rt.on_key_seen(doc.key)
                known, secret_obj = self.rt.secrets.lookup(ref.namespace, spec.secret_name)
                if not known:
                    secret_obj = await self.rt.kube.get_secret(ref.namespace, spec.secret_name)
                obs = replace(obs, store=state, secret=_secret_view(secret_obj))
            plan = rotation.plan(obs)
            for _ in range(MAX_STEPS):
                if plan.step is None or store is None or spec is None:
                    break
                obs, secret_obj = await self._apply(body, store, generator, spec, obs, plan.step,
                                                    secret_obj)
                obs = replace(obs, now=self.rt.clock())
                plan = rotation.plan(obs)
        except StoreUnavailable as exc:
            status_after = await self._report_failure(body, obs, "StoreUnavailable", str(exc))
            raise ReconcileFailed(str(exc), exc.retry_after, status_after) from None
        except StoreConflict as exc:
            status_after = await self._report_failure(body, obs, "StoreConflict", str(exc))
            return Outcome(None, True, "", status_after or {})
        except StoreError as exc:
            status_after = await self._report_failure(body, obs, "RotationFailed", str(exc))
            raise ReconcileFailed(str(exc), None, status_after) from None
        except GeneratorError as exc:
            # The current key stays in place: nothing after a failed mint has happened.
            message = f"key generator {spec.generator if spec else ''}: {exc}"
            status_after = await self._report_failure(body, obs, "RotationFailed", message)
            retry = exc.retry_after if isinstance(exc, GeneratorUnavailable) else 30.0
            raise ReconcileFailed(message, retry, status_after) from None
        except KubeTransient as exc:
            raise ReconcileFailed(str(exc), exc.retry_after) from None
        except KubeError as exc:
            status_after = await self._report_failure(body, obs, "RotationFailed", str(exc))
            raise ReconcileFailed(str(exc), None, status_after) from None

        new_status = dict(plan.status)
        new_status["conditions"] = build_conditions(plan.conditions, status.get("conditions"),
                                                    generation, now)
        new_status["observedGeneration"] = generation
        new_status["lastRestartToken"] = status.get("lastRestartToken")
        try:
            if plan.restarts and plan.restart_token \
                    and plan.restart_token != new_status["lastRestartToken"]:
                await self._restart(body, ref, plan.restarts, plan.restart_token)
                new_status["lastRestartToken"] = plan.restart_token
            await self._write_status(body, status, new_status)
        except KubeTransient as exc:
            # The steps are done; only the report is missing. Retry soon, from the store.
            raise ReconcileFailed(str(exc), exc.retry_after) from None
        except KubeError as exc:
            # 404: the ApiKey is gone; 422: our uid precondition failed, it is another object.
            if exc.status not in (404, 422):
                # The steps are done but the status cannot say so (e.g. 403 on apikeys/status):
                # the ApiKey's Events are the one place left where the user will see it.
                self.rt.post_event(body, "Warning", "StatusUpdateFailed",
                                   f"the key's status could not be recorded: {exc}")
            raise ReconcileFailed(str(exc)) from None
        self._observe_metrics(ref, new_status)
        return Outcome(plan.wake_at, plan.blocked,
                       secret_digest((secret_obj or {}).get("data")) if secret_obj else "",
                       new_status)

    async def _apply(
        self,
        body: Mapping[str, Any],
        store: Store,
        generator: KeyGenerator | None,
        spec: ApiKeySpec,
        obs: Observation,
        step: rotation.Step,
        secret_obj: dict[str, Any] | None,
    ) -> tuple[Observation, dict[str, Any] | None]:
        ref = obs.ref
        if isinstance(step, CreatePending):
            external_id = ""
            if generator is not None:
                minted = await generator.mint(ref, step.version, step.key_format, step.scopes)
                key, external_id = minted.key, minted.external_id
            else:
                key = self.rt.generate_key(step.key_format)
            self.rt.on_key_seen(key)
            document = replace(step.document(key), external_id=external_id)
            if step.trigger == "initial" and isinstance(store, SupportsWriteInitial):
                # The first version has no older key to protect: one write, already current.
                written = await self._store_call(store, "write_initial",
                                                 store.write_initial(ref, document))
                crashpoints.reached("after-create")
                obs = rotation.advance(obs, step, written)
                promoted = Promote(written.version, obs.now, None)
                metrics.ROTATIONS.labels(ref.namespace, ref.name, "initial", "success").inc()
                self._event(body, rotation.Event(
                    "Normal", "Provisioned",
                    f"key version {written.version} ({keys.fingerprint(written.key)}) "
                    f"provisioned in {obs.store_location}"))
                return rotation.advance(obs, promoted), secret_obj
            written = await self._store_call(store, "write_pending",
                                             store.write_pending(ref, document))
            crashpoints.reached("after-create")
            return rotation.advance(obs, step, written), secret_obj
        if isinstance(step, WriteSecret):
            new_body = secret_body(ref.namespace, step.name, step.data, step.labels,
                                   step.annotations, owner_reference(body), secret_obj)
            try:
                if secret_obj is None:
                    secret_obj = await self.rt.kube.create_secret(new_body)
                else:
                    secret_obj = await self.rt.kube.replace_secret(new_body)
            except KubeError:
                self.rt.secrets.forget(ref.namespace, step.name)  # read afresh on the retry
                raise
            self.rt.secrets.observed(secret_obj)
            crashpoints.reached({"project": "after-project", "expire": "after-expire-secret",
                                 "restore": "after-restore"}[step.purpose])
            if step.event is not None:
                self._event(body, step.event)
            return rotation.advance(obs, step), secret_obj
        if isinstance(step, Promote):
            trigger = ""
            if obs.store.pending is not None:
                trigger = obs.store.pending.handles.get("trigger", "")
            old = obs.store.current
            if (trigger == "revoke" and isinstance(store, SupportsPromoteRevoking)
                    and generator is None and old is not None
                    and old.key not in obs.secret.data.values()):
                return await self._promote_revoking(body, store, obs, step, old), secret_obj
            try:
                await self._store_call(store, "promote",
                                       store.promote(ref, step.version, step.previous_valid_until))
            except StoreError:
                metrics.ROTATIONS.labels(ref.namespace, ref.name, trigger, "failure").inc()
                raise
            crashpoints.reached("after-promote")
            metrics.ROTATIONS.labels(ref.namespace, ref.name, trigger, "success").inc()
            if step.event is not None:
                self._event(body, step.event)
            return rotation.advance(obs, step), secret_obj
        assert isinstance(step, Revoke)
        doc = next((d for d in (obs.store.previous, obs.store.pending, obs.store.current)
                    if d is not None and d.version == step.version), None)
        if generator is not None and doc is not None and doc.external_id:
            # At the vendor first: the store keeps the version (and its id) until that worked.
            await generator.revoke(ref, doc.external_id)
        await self._store_call(store, "revoke", store.revoke(ref, step.version))
        crashpoints.reached("after-revoke")
        if step.event is not None:
            kind = "emergency" if step.event.reason == "Revoked" else "expired"
            metrics.REVOCATIONS.labels(ref.namespace, ref.name, kind).inc()
            self._event(body, step.event)
        else:
            metrics.REVOCATIONS.labels(ref.namespace, ref.name, "superseded").inc()
        return rotation.advance(obs, step), secret_obj

    async def _promote_revoking(self, body: Mapping[str, Any], store: SupportsPromoteRevoking,
                                obs: Observation, step: Promote,
                                old: VersionDocument) -> Observation:
        """Emergency revoke in one store write; the Secret no longer holds the old key."""
        ref = obs.ref
        try:
            await self._store_call(cast(Store, store), "promote",
                                   store.promote_revoking_current(ref, step.version))
        except StoreError:
            metrics.ROTATIONS.labels(ref.namespace, ref.name, "revoke", "failure").inc()
            raise
        # One write did both steps: a crash right after it is a crash after either.
        crashpoints.reached("after-promote")
        crashpoints.reached("after-revoke")
        metrics.ROTATIONS.labels(ref.namespace, ref.name, "revoke", "success").inc()
        metrics.REVOCATIONS.labels(ref.namespace, ref.name, "emergency").inc()
        obs = rotation.advance(obs, step)
        new = obs.store.current
        assert new is not None
        self._event(body, rotation.Event(
            "Normal", "Revoked",
            f"key version {old.version} ({keys.fingerprint(old.key)}) revoked at once; "
            f"key version {new.version} ({keys.fingerprint(new.key)}) is current"))
        return rotation.advance(obs, Revoke(old.version))

    async def _restart(self, body: Mapping[str, Any], ref: KeyRef,
                       targets: tuple[Any, ...], token: str) -> None:
        annotation = rotation.RESTART_ANNOTATION_PREFIX + hashlib.sha256(
            ref.name.encode()).hexdigest()[:10]
        for target in targets:
            try:
                found = await self.rt.kube.restart_workload(
                    target.kind, ref.namespace, target.name, {annotation: token})
            except KubeTransient:
                raise  # retried as a whole; the same token never restarts a target twice
            except KubeError as exc:
                self.rt.post_event(body, "Warning", "RestartFailed",
                                   f"could not restart {target.kind} {target.name}: {exc}")
                continue
            if found:
                self.rt.post_event(body, "Normal", "RestartTriggered",
                                   f"restarted {target.kind} {target.name} for key {token}")
            else:
                self.rt.post_event(body, "Warning", "RestartTargetNotFound",
                                   f"{target.kind} {target.name} does not exist in "
                                   f"{ref.namespace}; the rotation itself succeeded")

    def _event(self, body: Mapping[str, Any], event: rotation.Event) -> None:
        self.rt.post_event(body, event.type, event.reason, event.message)

    async def _report_failure(self, body: Mapping[str, Any], obs: Observation,
                              reason: str, message: str) -> Mapping[str, Any] | None:
        """Ready=False with `reason`, everything else in status kept; a Warning on transition."""
        status: Mapping[str, Any] = _as_mapping(body.get("status"))
        kept = [c for c in status.get("conditions") or []
                if isinstance(c, Mapping) and c.get("type") not in ("Ready",)]
        wanted = [Condition("Ready", False, reason, message)] + [
            Condition(str(c["type"]), c.get("status") == "True", str(c.get("reason", "")),
                      str(c.get("message", ""))) for c in kept if c.get("type")]
        new_status = dict(status)
        new_status["conditions"] = build_conditions(wanted, status.get("conditions"),
                                                    obs.generation, obs.now)
        new_status["observedGeneration"] = obs.generation
        if obs.store_location:
            new_status["storeRef"] = obs.store_location
        try:
            await self._write_status(body, status, new_status)
        except KubeError as exc:
            logger.warning("could not record %s in status: %s", reason, exc)
            return None
        return new_status

    async def _write_status(self, body: Mapping[str, Any], old: Mapping[str, Any],
                            new: Mapping[str, Any]) -> None:
        patch: dict[str, Any] = {}
        for key, value in new.items():
            if old.get(key) != value and not (value is None and key not in old):
                patch[key] = value
        old_ready = condition_of(old.get("conditions"), "Ready")
        new_ready = condition_of(new.get("conditions"), "Ready")
        if (new_ready.get("status") == "False"
                and new_ready.get("reason") in rotation.WARNING_REASONS
                and (old_ready.get("reason"), old_ready.get("message"))
                != (new_ready.get("reason"), new_ready.get("message"))):
            self.rt.post_event(body, "Warning", str(new_ready["reason"]),
                               str(new_ready.get("message", "")))
        stalled = condition_of(new.get("conditions"), "Stalled")
        old_stalled = condition_of(old.get("conditions"), "Stalled")
        if stalled.get("status") == "True" and stalled.get("reason") == "InvalidSpec" \
                and old_stalled.get("message") != stalled.get("message") \
                and new_ready.get("reason") != "InvalidSpec":
            self.rt.post_event(body, "Warning", "InvalidSpec", str(stalled.get("message", "")))
        if not patch:
            return
        meta = body["metadata"]
        await self.rt.kube.patch_apikey_status(meta["namespace"], meta["name"], patch,
                                               uid=str(meta.get("uid", "")),
                                               has_status=bool(old))

    def _observe_metrics(self, ref: KeyRef, status: Mapping[str, Any]) -> None:
        current = status.get("currentKey") or {}
        created = current.get("createdAt")
        due = status.get("nextRotationTime")
        metrics.observe_key(ref.namespace, ref.name,
                            parse_time(created) if isinstance(created, str) else None,
                            parse_time(due) if isinstance(due, str) else None)


def _as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _token(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return rotation.request_token(value)


async def delete_from_store(runtime: Runtime, body: Mapping[str, Any]) -> str:
    """Carry out deletionPolicy; returns what was done, for the log. Raises StoreError."""
    meta = body.get("metadata") or {}
    ref = KeyRef(str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid", "")))
    spec = body.get("spec") or {}
    if not isinstance(spec, Mapping) or spec.get("deletionPolicy", "Delete") == "Retain":
        return "retained in the store (deletionPolicy Retain)"
    store = runtime.stores.get(str(spec.get("store", "kubernetes")))
    if store is None:
        return "no configured store to delete from"
    state = await store.read(ref)
    if not state.exists:
        return "nothing in the store"
    if not state.owned_by(ref):
        return "the store entry belongs to something else; left untouched"
    generator_name = ((spec.get("generator") or {}).get("webhook") or {}).get("name") \
        if isinstance(spec.get("generator"), Mapping) else None
    generator = runtime.generators.get(str(generator_name)) if generator_name else None
    if generator is not None:
        for doc in (state.current, state.previous, state.pending):
            if doc is not None and doc.external_id:
                await generator.revoke(ref, doc.external_id)
    await store.delete(ref)
    metrics.REVOCATIONS.labels(ref.namespace, ref.name, "deleted").inc()
    metrics.forget_key(ref.namespace, ref.name)
    return f"revoked and deleted {store.location(ref)}"
