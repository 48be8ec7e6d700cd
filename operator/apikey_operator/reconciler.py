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

from apikey_operator import conditions, crashpoints, keys, metrics, rotation
from apikey_operator.generators import GeneratorError, GeneratorUnavailable, KeyGenerator
from apikey_operator.generators.base import LocalKeys
from apikey_operator.grace import KeyUsage, UsageWatch
from apikey_operator.kube import (
    KubeClient,
    KubeError,
    KubeStale,
    KubeTransient,
    decode_data,
    secret_body,
)
from apikey_operator.placement import TARGET, StoreEntry
from apikey_operator.reasons import Reason
from apikey_operator.rotation import (
    CreateInitial,
    CreatePending,
    DeleteSecret,
    Observation,
    PolicyView,
    Promote,
    PromoteRevoking,
    RetireStore,
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
    Capabilities,
    EntryUnusable,
    StoreCorrupt,
    StoreState,
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
        # Names a create found taken (by a Secret the watch does not show: somebody else's,
        # or ours before the watch caught up): read these, never assume them absent.
        self._taken: set[tuple[str, str]] = set()
        # The names each ApiKey (namespace, controller uid) owns, kept with the entries: a
        # scan of every entry per reconcile would make a restart quadratic in the keys.
        self._owned: dict[tuple[str, str], set[str]] = {}
        self._owner: dict[tuple[str, str], str] = {}  # (namespace, name) -> controller uid

    @staticmethod
    def _version(obj: Mapping[str, Any]) -> int | None:
        raw = (obj.get("metadata") or {}).get("resourceVersion")
        return int(raw) if isinstance(raw, str) and raw.isdigit() else None

    def lookup(self, namespace: str, name: str, *,
               assume_absent: bool = False) -> tuple[bool, dict[str, Any] | None]:
        """(known, object): known is False when only a GET can tell. With `assume_absent` a
        name the cache has never seen is taken as free (the caller's create checks it)."""
        entry = self._entries.get((namespace, name))
        if entry is None:
            return assume_absent and (namespace, name) not in self._taken, None
        return True, copy.deepcopy(entry[1])

    def taken(self, namespace: str, name: str) -> None:
        """A create found this name in use: read it from now on."""
        self._drop((namespace, name))
        self._taken.add((namespace, name))

    def observed(self, obj: Mapping[str, Any], *, deleted: bool = False) -> None:
        meta = obj.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        version = self._version(obj)
        if version is None:
            self._drop(key)
            return
        self._taken.discard(key)
        current = self._entries.get(key)
        if current is None or version >= current[0]:
            self._entries[key] = (version, None if deleted else _slim(obj))
            self._index(key, None if deleted else _controller_uid(meta))

    def forget(self, namespace: str, name: str) -> None:
        self._drop((namespace, name))

    def owned(self, namespace: str, uid: str) -> list[str]:
        """Names of the Secrets in `namespace` whose controller is the ApiKey `uid`."""
        return sorted(self._owned.get((namespace, uid), ()))

    def _drop(self, key: tuple[str, str]) -> None:
        self._entries.pop(key, None)
        self._index(key, None)

    def _index(self, key: tuple[str, str], uid: str | None) -> None:
        before = self._owner.pop(key, None)
        if before is not None:
            names = self._owned[(key[0], before)]
            names.discard(key[1])
            if not names:
                del self._owned[(key[0], before)]
        if uid is not None:
            self._owner[key] = uid
            self._owned.setdefault((key[0], uid), set()).add(key[1])

    def current_digest(self, namespace: str, name: str) -> str | None:
        """`secret_digest` of the newest version known ("" once deleted); None: unknown."""
        entry = self._entries.get((namespace, name))
        if entry is None:
            return None
        return "" if entry[1] is None else secret_digest(entry[1].get("data"))

    def holds(self, obj: Mapping[str, Any]) -> bool:
        """Whether this exact version is already known (e.g. the echo of our own write)."""
        meta = obj.get("metadata") or {}
        entry = self._entries.get((str(meta.get("namespace")), str(meta.get("name"))))
        return entry is not None and entry[1] is not None and entry[0] == self._version(obj)


def _controller_uid(meta: Mapping[str, Any]) -> str | None:
    owners = meta.get("ownerReferences") if isinstance(meta, Mapping) else None
    for owner in owners if isinstance(owners, list) else ():
        if isinstance(owner, Mapping) and owner.get("controller") and owner.get("uid"):
            return str(owner["uid"])
    return None


def _slim(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy without `metadata.managedFields`: the server's bookkeeping of who wrote which
    field, nested dicts nobody here reads, and most of what one cached Secret weighs."""
    slim = copy.deepcopy({k: v for k, v in obj.items() if k != "metadata"})
    meta = obj.get("metadata")
    if isinstance(meta, Mapping):
        slim["metadata"] = copy.deepcopy({k: v for k, v in meta.items() if k != "managedFields"})
    return slim


class StatusCache:
    """The status each ApiKey's last write left, by uid.

    The watch event carrying our own patch may arrive after the next reconcile starts; the
    fields we own are taken from here then, so a reconcile never plans from (or announces
    against) a status older than its own last write. An object at least as new as that write
    (by resourceVersion) wins: it also holds what another replica wrote since.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, Mapping[str, Any]]] = {}

    def recorded(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        meta = _as_mapping(body.get("metadata"))
        observed = _as_mapping(body.get("status"))
        uid = str(meta.get("uid", ""))
        entry = self._entries.get(uid)
        if entry is None:
            return observed
        seen = _version_number(meta.get("resourceVersion"))
        if seen is not None and seen >= entry[0]:
            del self._entries[uid]
            return observed
        merged = dict(observed)
        merged.update(entry[1])
        return {k: v for k, v in merged.items() if v is not None}

    def wrote(self, uid: str, status: Mapping[str, Any], resource_version: str) -> None:
        number = _version_number(resource_version)
        self._entries[uid] = (number if number is not None else 0, copy.deepcopy(dict(status)))

    def forget(self, uid: str) -> None:
        self._entries.pop(uid, None)


@dataclass
class Runtime:
    """What every reconcile shares: stores, the API client, limits, the clock."""

    stores: Mapping[str, Store]
    kube: KubeClient
    post_event: EventPoster
    generators: Mapping[str, KeyGenerator] = field(default_factory=dict)
    secrets: SecretCache = field(default_factory=SecretCache)
    statuses: StatusCache = field(default_factory=StatusCache)
    store_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(16))
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    generate_key: Callable[[keys.KeyFormat], str] = keys.generate
    on_key_seen: Callable[[str], None] = lambda _key: None
    # What the usage monitor last said of a key in its grace, by ApiKey uid.
    usage_report: Callable[[str], KeyUsage | None] = lambda _uid: None
    # The newest version of an ApiKey the watch has delivered, by uid (None: not known).
    latest: Callable[[str], Mapping[str, Any] | None] = lambda _uid: None


@dataclass(frozen=True)
class Outcome:
    wake_at: datetime | None
    blocked: bool
    secret_digest: str
    # Ready's reason as this reconcile left it (the caller retries conflicts on a backoff).
    ready_reason: str
    # A key in its grace: what the usage monitor should watch (None: nothing).
    usage_watch: UsageWatch | None = None


class ReconcileFailed(Exception):
    """Reconcile stopped early; the status already says why. `retry_after` hints the backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


@dataclass
class _Attempt:
    """One reconcile's working set: what `_apply` reads and updates step by step."""

    body: Mapping[str, Any]
    store: Store
    source: KeyGenerator
    obs: Observation
    secret_obj: dict[str, Any] | None
    # The store entry was not read (a key never provisioned): the first write is the check.
    store_unread: bool = False


class Reconciler:
    """Reconciles one ApiKey at a time (the caller serialises calls per key).

    It decides nothing: `rotation.plan` says which step comes next and what to tell the
    user, `conditions` what the status says; this class carries each step out (one call,
    one crash point) and records the outcome.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def _store_call(self, store: Store, operation: str, call: Awaitable[T]) -> T:
        async with self.rt.store_slots:
            try:
                return await call
            except StoreConflict:
                raise  # an answer about ownership (reported as StoreConflict), not a failure
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
        status = self.rt.statuses.recorded(body)
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
            capabilities=store.capabilities if store is not None else Capabilities(),
            vendor_keys=generator is not None,
            policy=policy_view(spec.policy_name if spec else None, policies),
            namespace_labels=namespace_labels,
            rotate_request=_token(annotations.get(ROTATE_ANNOTATION)),
            revoke_request=_token(annotations.get(REVOKE_ANNOTATION)),
            usage=self.rt.usage_report(ref.uid),
        )
        attempt: _Attempt | None = None
        try:
            if spec is not None and store is not None:
                obs = replace(obs, store_location=store.location(ref))
                # A key never provisioned has no Secret of ours and, almost always, no store
                # entry: no GET for either (a brand-new key would only ever find "absent").
                # What is there after all (ours after a crash, or somebody else's) fails the
                # create that comes instead, which then reads it (_write_secret, _apply).
                fresh = _never_provisioned(status)
                # Not for a vendor's keys: a key minted before the entry is found would stay
                # live at the vendor with nothing left to revoke it.
                unread = fresh and store.capabilities.write_initial and generator is None
                state = StoreState() if unread else await self._store_call(
                    store, "read", store.read(ref))
                self._seen(state)
                known, secret_obj = self.rt.secrets.lookup(
                    ref.namespace, spec.secret_name, assume_absent=fresh)
                if not known:
                    secret_obj = await self.rt.kube.get_secret(ref.namespace, spec.secret_name)
                # Secrets this key projected into before spec.secret.name changed.
                stale = tuple(n for n in self.rt.secrets.owned(ref.namespace, ref.uid)
                              if n != spec.secret_name)
                elsewhere, unreachable = await self._read_elsewhere(ref, spec.store, status)
                obs = replace(obs, store=state, secret=_secret_view(secret_obj),
                              stale_secrets=stale, store_name=spec.store, elsewhere=elsewhere,
                              unreachable=unreachable)
                attempt = _Attempt(body, store, generator or LocalKeys(self.rt.generate_key),
                                   obs, secret_obj, unread)
            plan = rotation.plan(obs)
            for _ in range(MAX_STEPS):
                if plan.step is None or attempt is None:
                    break
                await self._apply(attempt, plan.step)
                attempt.obs = obs = replace(attempt.obs, now=self.rt.clock())
                plan = rotation.plan(obs)
            else:
                raise StoreError(f"no stable state after {MAX_STEPS} steps")
        except StoreUnavailable as exc:
            await self._report_failure(body, obs, Reason.STORE_UNAVAILABLE, str(exc))
            raise ReconcileFailed(str(exc), exc.retry_after) from None
        except StoreConflict as exc:
            await self._report_failure(body, obs, Reason.STORE_CONFLICT, str(exc))
            return Outcome(None, True, "", Reason.STORE_CONFLICT)
        except StoreError as exc:
            await self._report_failure(body, obs, Reason.ROTATION_FAILED, str(exc))
            raise ReconcileFailed(str(exc), None) from None
        except GeneratorError as exc:
            # The current key stays in place: nothing after a failed mint has happened.
            message = f"key generator {spec.generator if spec else ''}: {exc}"
            await self._report_failure(body, obs, Reason.ROTATION_FAILED, message)
            retry = exc.retry_after if isinstance(exc, GeneratorUnavailable) else 30.0
            raise ReconcileFailed(message, retry) from None
        except KubeTransient as exc:
            raise ReconcileFailed(str(exc), exc.retry_after) from None
        except KubeError as exc:
            await self._report_failure(body, obs, Reason.ROTATION_FAILED, str(exc))
            raise ReconcileFailed(str(exc), None) from None

        new_status = conditions.status_for(plan, status, generation, now)
        new_status["lastRestartToken"] = status.get("lastRestartToken")
        try:
            if plan.restarts and plan.restart_token \
                    and plan.restart_token != new_status["lastRestartToken"]:
                await self._restart(body, ref, plan.restarts, plan.restart_token)
                new_status["lastRestartToken"] = plan.restart_token
            await self._write_status(body, status, new_status, plan.events)
            if any(e.reason == Reason.REVOKED for e in plan.events) and obs.revoke_request:
                # The request's own time (when its value is one, as the CLI writes it) to the
                # old key's revocation, now recorded.
                metrics.observe_revocation(obs.revoke_request, self.rt.clock())
        except KubeTransient as exc:
            # The steps are done; only the report is missing. Retry soon, from the store.
            raise ReconcileFailed(str(exc), exc.retry_after) from None
        except KubeError as exc:
            # 404: the ApiKey is gone; 422: our uid precondition failed, it is another object.
            if exc.status not in (404, 422):
                # The steps are done but the status cannot say so (e.g. 403 on apikeys/status):
                # the ApiKey's Events are the one place left where the user will see it.
                self.rt.post_event(body, "Warning", Reason.STATUS_UPDATE_FAILED,
                                   f"the key's status could not be recorded: {exc}")
            raise ReconcileFailed(str(exc)) from None
        self._observe_metrics(ref, new_status)
        secret_obj = attempt.secret_obj if attempt is not None else None
        return Outcome(plan.wake_at, plan.blocked,
                       secret_digest(secret_obj.get("data")) if secret_obj else "",
                       plan.readiness.reason, plan.usage_watch)

    async def _write_initial(self, attempt: _Attempt, store: Store,
                             document: VersionDocument) -> VersionDocument | None:
        """The first version, written current. None when an unread write found an entry
        already there (ours after a crash, or somebody else's): the observation then holds
        all of it, read afresh, for the plan to decide as it does after any read."""
        ref = attempt.obs.ref
        unread, attempt.store_unread = attempt.store_unread, False
        try:
            written = await self._store_call(
                store, "write_initial",
                cast(SupportsWriteInitial, store).write_initial(ref, document, unread=unread))
        except StoreConflict:
            if not unread:
                raise
        else:
            if not unread or written is document:
                return written
        state = await self._store_call(store, "read", store.read(ref))
        self._seen(state)
        attempt.obs = replace(attempt.obs, store=state)
        return None

    def _seen(self, state: StoreState) -> None:
        """Register every key a store read returned with the leak scan's redaction."""
        for doc in (state.current, state.previous, state.pending):
            if doc is not None:
                self.rt.on_key_seen(doc.key)

    async def _read_elsewhere(self, ref: KeyRef, target: str, status: Mapping[str, Any],
                              ) -> tuple[tuple[StoreEntry, ...], tuple[str, ...]]:
        """This ApiKey's entries in the other stores its status names (a store move), and
        the names it gives that are not configured (never forgotten: see formerStores)."""
        entries: list[StoreEntry] = []
        unreachable: list[str] = []
        for name in recorded_stores(self.rt.stores, ref, status):
            if name == target:
                continue
            store = self.rt.stores.get(name)
            if store is None:
                unreachable.append(name)
                continue
            state = await self._store_call(store, "read", store.read(ref))
            self._seen(state)
            entries.append(StoreEntry(name, store.location(ref), state))
        return tuple(entries), tuple(unreachable)

    async def _apply(self, attempt: _Attempt, step: rotation.Step) -> None:
        """Carry out one step: one call, one crash point, the observation advanced."""
        obs, ref = attempt.obs, attempt.obs.ref
        # Store-targeted steps of a store move name their store; every other step is spec's.
        store_name = getattr(step, "store", TARGET)
        store = attempt.store if store_name == TARGET else self.rt.stores[store_name]
        if isinstance(step, CreateInitial | CreatePending):
            minted = await attempt.source.mint(ref, step.version, step.key_format, step.scopes)
            self.rt.on_key_seen(minted.key)
            document = step.document(minted.key, minted.external_id)
            if isinstance(step, CreateInitial):
                written = await self._write_initial(attempt, store, document)
                if written is None:
                    return  # the entry was there after all: planned again from all of it
            else:
                written = await self._store_call(store, "write_pending",
                                                 store.write_pending(ref, document))
            crashpoints.reached("after-create")
            if isinstance(step, CreateInitial):
                metrics.ROTATIONS.labels(ref.namespace, ref.name, "initial", "success").inc()
            attempt.obs = rotation.advance(obs, step, written)
        elif isinstance(step, WriteSecret):
            if not await self._write_secret(attempt, step):
                return  # the name was taken: re-planned with what is there
            crashpoints.reached({"project": "after-project", "expire": "after-expire-secret",
                                 "restore": "after-restore"}[step.purpose])
            if step.event is not None:
                self._event(attempt.body, step.event)
            attempt.obs = rotation.advance(obs, step)
        elif isinstance(step, DeleteSecret):
            await self.rt.kube.delete_secret(ref.namespace, step.name)
            self.rt.secrets.forget(ref.namespace, step.name)
            self._event(attempt.body, step.event)
            attempt.obs = rotation.advance(obs, step)
        elif isinstance(step, Promote):
            await self._counted_rotation(ref, step.trigger, self._store_call(
                store, "promote", store.promote(ref, step.version, step.previous_valid_until)))
            crashpoints.reached("after-promote")
            attempt.obs = rotation.advance(obs, step)
        elif isinstance(step, PromoteRevoking):
            await self._counted_rotation(ref, "revoke", self._store_call(
                store, "promote",
                cast(SupportsPromoteRevoking, store).promote_revoking_current(ref, step.version)))
            # One write did both steps: a crash right after it is a crash after either.
            crashpoints.reached("after-promote")
            crashpoints.reached("after-revoke")
            metrics.REVOCATIONS.labels(ref.namespace, ref.name, "emergency").inc()
            attempt.obs = rotation.advance(obs, step)
        elif isinstance(step, RetireStore):
            for external_id in step.external_ids:
                await attempt.source.revoke(ref, external_id)
            await self._store_call(store, "delete", store.delete(ref))
            crashpoints.reached("after-retire-store")
            metrics.REVOCATIONS.labels(ref.namespace, ref.name, step.kind).inc()
            attempt.obs = rotation.advance(obs, step)
        else:
            if step.external_id:
                # At the vendor first: the store keeps the version (and its id) until that worked.
                await attempt.source.revoke(ref, step.external_id)
            await self._store_call(store, "revoke", store.revoke(ref, step.version))
            crashpoints.reached("after-revoke")
            metrics.REVOCATIONS.labels(ref.namespace, ref.name, step.kind).inc()
            attempt.obs = rotation.advance(obs, step)

    async def _counted_rotation(self, ref: KeyRef, trigger: str, call: Awaitable[Any]) -> None:
        try:
            await call
        except StoreError:
            metrics.ROTATIONS.labels(ref.namespace, ref.name, trigger, "failure").inc()
            raise
        metrics.ROTATIONS.labels(ref.namespace, ref.name, trigger, "success").inc()

    async def _write_secret(self, attempt: _Attempt, step: WriteSecret) -> bool:
        """Write the Secret; False when a create found the name taken (the observation then
        shows what holds it, for the plan to decide: ours to update, or a SecretConflict)."""
        ref = attempt.obs.ref
        new_body = secret_body(ref.namespace, step.name, step.data, step.labels,
                               step.annotations, owner_reference(attempt.body),
                               attempt.secret_obj)
        try:
            if attempt.secret_obj is None:
                attempt.secret_obj = await self.rt.kube.create_secret(new_body)
            else:
                attempt.secret_obj = await self.rt.kube.replace_secret(new_body)
        except KubeError as exc:
            if attempt.secret_obj is None and exc.status == 409:
                self.rt.secrets.taken(ref.namespace, step.name)
                found = await self.rt.kube.get_secret(ref.namespace, step.name)
                if found is not None:
                    attempt.secret_obj = found
                    attempt.obs = replace(attempt.obs, secret=_secret_view(found))
                    return False
            self.rt.secrets.forget(ref.namespace, step.name)  # read afresh on the retry
            raise
        self.rt.secrets.observed(attempt.secret_obj)
        return True

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
                self.rt.post_event(body, "Warning", Reason.RESTART_FAILED,
                                   f"could not restart {target.kind} {target.name}: {exc}")
                continue
            if found:
                self.rt.post_event(body, "Normal", Reason.RESTART_TRIGGERED,
                                   f"restarted {target.kind} {target.name} for key {token}")
            else:
                self.rt.post_event(body, "Warning", Reason.RESTART_TARGET_NOT_FOUND,
                                   f"{target.kind} {target.name} does not exist in "
                                   f"{ref.namespace}; the rotation itself succeeded")

    def _event(self, body: Mapping[str, Any], event: rotation.Event) -> None:
        self.rt.post_event(body, event.type, event.reason, event.message)

    async def _report_failure(self, body: Mapping[str, Any], obs: Observation,
                              reason: Reason, message: str) -> None:
        """Ready=False with `reason`, everything else in status kept; a Warning on transition."""
        new_status = conditions.failure_status(obs.status, reason, message, obs.generation,
                                               obs.now, obs.store_location)
        try:
            await self._write_status(body, obs.status, new_status, ())
        except KubeError as exc:
            logger.warning("could not record %s in status: %s", reason, exc)

    async def _write_status(self, body: Mapping[str, Any], old: Mapping[str, Any],
                            new: Mapping[str, Any], events: tuple[rotation.Event, ...]) -> None:
        """Record `new`, then post what it tells the user for the first time (after the
        write: an Event never announces what the status does not show)."""
        patch: dict[str, Any] = {}
        for key, value in new.items():
            if old.get(key) != value and not (value is None and key not in old):
                patch[key] = value
        meta = body["metadata"]
        if patch:
            uid = str(meta.get("uid", ""))
            version = await self._patch_status(meta, old, patch, uid)
            self.rt.statuses.wrote(uid, new, version)
        for event in (*events, *conditions.condition_events(old, new)):
            self._event(body, event)

    async def _patch_status(self, meta: Mapping[str, Any], old: Mapping[str, Any],
                            patch: Mapping[str, Any], uid: str) -> str:
        """Write `patch` only onto the status this plan started from: the Events of a plan
        are relative to that status, so a second writer (another replica in the moment both
        are active, a lagging watch) must never record, and announce, the same change twice.
        A change elsewhere in the object (a finalizer, an annotation) is no conflict."""
        namespace, name = str(meta["namespace"]), str(meta["name"])
        version = str(meta.get("resourceVersion") or "") or None
        # kopf adds its finalizer just after it starts a new key's worker, so the first write
        # of nearly every key would be refused as stale and retried. A newer version the watch
        # has already delivered, with our status fields as this plan saw them, is the one the
        # retry would use: start from it.
        newer = self.rt.latest(uid)
        if newer is not None and version is not None:
            newer_meta = _as_mapping(newer.get("metadata"))
            seen = _version_number(newer_meta.get("resourceVersion"))
            started = _version_number(version)
            if (newer_meta.get("uid") == uid and seen is not None and started is not None
                    and seen > started
                    and _owned(_as_mapping(newer.get("status"))) == _owned(old)):
                version = str(newer_meta["resourceVersion"])
        for _ in range(4):
            try:
                return await self.rt.kube.patch_apikey_status(
                    namespace, name, patch, uid=uid, has_status=bool(old),
                    resource_version=version)
            except KubeStale as exc:
                # The write's own read told the stale version apart: no second GET.
                fresh = exc.current if exc.current is not None else (
                    await self.rt.kube.get_apikey(namespace, name))
                if fresh is None or (fresh.get("metadata") or {}).get("uid") != uid:
                    raise KubeError(f"ApiKey {namespace}/{name} is gone", 404) from None
                if _owned(_as_mapping(fresh.get("status"))) != _owned(old):
                    raise KubeTransient(f"the status of ApiKey {namespace}/{name} changed "
                                        "meanwhile; planning again", 409,
                                        retry_after=0.2) from None
                version = str((fresh.get("metadata") or {}).get("resourceVersion") or "")
        raise KubeTransient(f"ApiKey {namespace}/{name} keeps changing", 409)

    def _observe_metrics(self, ref: KeyRef, status: Mapping[str, Any]) -> None:
        current = status.get("currentKey") or {}
        previous = status.get("previousKey") or {}
        created = current.get("createdAt")
        due = status.get("nextRotationTime")
        until = previous.get("validUntil")
        fingerprints = {role: str(entry["fingerprint"])
                        for role, entry in (("current", current), ("previous", previous))
                        if entry.get("fingerprint")}
        metrics.observe_key(ref.namespace, ref.name,
                            parse_time(created) if isinstance(created, str) else None,
                            parse_time(due) if isinstance(due, str) else None,
                            fingerprints, parse_time(until) if isinstance(until, str) else None)


def _owned(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status fields the reconciler writes (kopf keeps its own under `kopf`)."""
    return {k: v for k, v in status.items() if k != "kopf" and v is not None}


def _version_number(value: object) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _as_mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _token(value: object) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return rotation.request_token(value)


@dataclass(frozen=True)
class Cleanup:
    """What deleting an ApiKey did in its store; `incomplete` says what was left and why."""

    done: str
    incomplete: str = ""


def _never_provisioned(status: Mapping[str, Any]) -> bool:
    """The status shows no key ever made current and no store holding one."""
    return not isinstance(status.get("currentKey"), Mapping) and not any(
        status.get(field) for field in ("store", "storeRef", "formerStores", "previousKey"))


def recorded_stores(stores: Mapping[str, Store], ref: KeyRef,
                    status: Mapping[str, Any]) -> list[str]:
    """The stores the status says hold this ApiKey's versions: status.store and
    status.formerStores; for a status written before those fields, the configured store
    whose location is status.storeRef."""
    names: list[str] = []
    recorded = status.get("store")
    if isinstance(recorded, str) and recorded:
        names.append(recorded)
    elif isinstance(status.get("storeRef"), str):
        names += [name for name, store in sorted(stores.items())
                  if store.location(ref) == status["storeRef"]][:1]
    former = status.get("formerStores")
    if isinstance(former, list):
        names += [name for name in former if isinstance(name, str) and name]
    return list(dict.fromkeys(names))


async def delete_from_store(runtime: Runtime, body: Mapping[str, Any]) -> Cleanup:
    """Carry out deletionPolicy in every store this ApiKey's versions live in (spec.store and
    those its status names: a store move leaves the old key in the old store for a grace).
    Raises StoreError when a retry can help; an entry that is already being deleted, or
    unreadable, is removed as far as it can be and reported, as is a store named in status
    that is no longer configured."""
    meta = body.get("metadata") or {}
    ref = KeyRef(str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid", "")))
    spec = body.get("spec") or {}
    if not isinstance(spec, Mapping) or spec.get("deletionPolicy", "Delete") == "Retain":
        return Cleanup("retained in the store (deletionPolicy Retain)")
    names = [str(spec.get("store", "kubernetes"))]
    names += recorded_stores(runtime.stores, ref, _as_mapping(body.get("status")))
    done: list[str] = []
    incomplete: list[str] = []
    for name in dict.fromkeys(names):
        store = runtime.stores.get(name)
        if store is None:
            if name != names[0] or name in names[1:]:
                incomplete.append(f"store {name} is no longer configured: this ApiKey's entry "
                                  "there was not revoked or deleted")
            continue
        cleanup = await _delete_in(runtime, store, ref, spec)
        done.append(cleanup.done)
        if cleanup.incomplete:
            incomplete.append(cleanup.incomplete)
    metrics.forget_key(ref.namespace, ref.name)
    return Cleanup("; ".join(done) or "no configured store to delete from",
                   "; ".join(incomplete))


async def _delete_in(runtime: Runtime, store: Store, ref: KeyRef,
                     spec: Mapping[str, Any]) -> Cleanup:
    """deletionPolicy Delete in one store."""
    try:
        state = await store.read(ref)
    except (EntryUnusable, StoreCorrupt) as exc:
        # Waiting would hold the ApiKey (and its namespace) for the whole recovery window:
        # delete what the store still lets us delete, and say what could not be checked.
        await store.delete(ref)
        return Cleanup(f"deleted {store.location(ref)} as far as the store allowed",
                       f"the store entry {store.location(ref)} could not be read ({exc}); it "
                       "was deleted without revoking its versions one by one (a vendor key, "
                       "if any, was not revoked at the vendor)")
    if not state.exists:
        return Cleanup(f"nothing in {store.location(ref)}")
    if not state.owned_by(ref):
        return Cleanup(f"the store entry {store.location(ref)} belongs to something else; "
                       "left untouched")
    generator_name = ((spec.get("generator") or {}).get("webhook") or {}).get("name") \
        if isinstance(spec.get("generator"), Mapping) else None
    generator = runtime.generators.get(str(generator_name)) if generator_name else None
    if generator is not None:
        for doc in (state.current, state.previous, state.pending):
            if doc is not None and doc.external_id:
                await generator.revoke(ref, doc.external_id)
    await store.delete(ref)
    metrics.REVOCATIONS.labels(ref.namespace, ref.name, "deleted").inc()
    return Cleanup(f"revoked and deleted {store.location(ref)}")
