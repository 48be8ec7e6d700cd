"""kopf registrations only: watch events wake one worker per ApiKey; the worker reconciles.

Each ApiKey has one long-lived daemon (its worker). It reconciles, then sleeps
until the earliest due time (next rotation, end of a grace period) or until an
event that matters wakes it: the ApiKey's spec or action annotations changed,
its Secret was edited or deleted, its RotationPolicy or its namespace's labels
changed. While idle a worker makes no API and no store calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from apikey_operator import audit, conditions, metrics, redaction
from apikey_operator.config import Settings, build_generators, build_stores
from apikey_operator.generators import GeneratorError
from apikey_operator.kube import KubeClient, KubeError
from apikey_operator.reasons import Reason
from apikey_operator.reconciler import (
    ReconcileFailed,
    Reconciler,
    Runtime,
    delete_from_store,
    secret_digest,
)
from apikey_operator.spec import (
    GROUP,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    VERSION,
    SpecError,
    parse_policy,
)
from apikey_operator.stores import StoreError
from apikey_operator.stores.kubernetes import STORE_LABEL
from apikey_operator.usage import UsageMonitor

logger = logging.getLogger(__name__)
FINALIZER = f"{GROUP}/finalizer"
BACKOFF_START = 1.0
BACKOFF_CAP = 300.0
# A key blocked by an object that is not ours (SecretConflict, StoreConflict) is woken by the
# events we see, but the blocker's removal is not always one of them (a store entry, a Secret
# without our label): such keys also look again on a bounded backoff.
CONFLICT_REASONS = frozenset({Reason.SECRET_CONFLICT, Reason.STORE_CONFLICT})
CONFLICT_RETRY_START = 2.0


@dataclass
class Worker:
    namespace: str
    name: str
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    trigger_state: tuple[Any, ...] = ()
    secret_name: str = ""
    secret_digest: str = ""
    policy_name: str | None = None
    # Set by the DELETED event of this uid: the object is gone, whether or not our finalizer
    # ever landed on it (deleted at once after creation, it never ran on.delete).
    gone: bool = False
    # The compliance findings last exported (a new KeyTooOld posts its Warning).
    findings: frozenset[str] = frozenset()


# Key changes arrive in bursts (a GitOps sync of a thousand keys): one status write per
# policy per this many seconds at most.
POLICY_STATUS_INTERVAL = 2.0


class PolicyReporter:
    """Keeps every RotationPolicy's own status (Ready, keys) true, from one task.

    Not a kopf daemon: kopf puts a finalizer on every object a daemon serves, and a policy
    must stay deletable while the operator is down. Marked policies are reported together
    after `POLICY_STATUS_INTERVAL`; with nothing marked the task sleeps.
    """

    def __init__(self) -> None:
        self.dirty: set[str] = set()
        self.recorded: dict[str, Mapping[str, Any]] = {}  # by uid: our last write
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.policies: kopf.Index[str, Mapping[str, Any]] | None = None
        self.refs: kopf.Index[str, str] | None = None

    def mark(self, name: str | None) -> None:
        if name is None:
            return
        self.dirty.add(name)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(POLICY_STATUS_INTERVAL)
            self._wake.clear()
            names, self.dirty = self.dirty, set()
            runtime = STATE.runtime
            if runtime is None or self.policies is None or self.refs is None:
                self.dirty |= names
                continue
            for name in sorted(names):
                bodies = self.policies.get(name)
                body = next(iter(bodies), None) if bodies else None
                if body is not None:
                    await self._report(runtime, body, len(self.refs.get(name, ())))

    async def _report(self, runtime: Runtime, body: Mapping[str, Any], keys: int) -> None:
        """Write the policy's status if it changed, and a Warning when it turns invalid."""
        meta = body.get("metadata") or {}
        name, uid = str(meta.get("name")), str(meta.get("uid", ""))
        raw = body.get("status")
        before = self.recorded.get(uid) or (raw if isinstance(raw, Mapping) else {})
        error = summary = None
        try:
            summary = parse_policy(body).summary()
        except SpecError as exc:
            error = str(exc)
        generation = meta.get("generation")
        after = conditions.policy_status(error, summary or "", keys, before,
                                         generation if isinstance(generation, int) else 0,
                                         runtime.clock())
        patch = {k: v for k, v in after.items() if before.get(k) != v}
        if not patch:
            return
        try:
            await runtime.kube.patch_policy_status(name, patch, uid=uid, has_status=bool(before))
        except KubeError as exc:
            if exc.status != 404:
                logger.warning("could not record the status of RotationPolicy %s: %s", name, exc)
                self.dirty.add(name)  # the next mark retries it
            return
        self.recorded[uid] = after
        for event in conditions.condition_events(before, after):
            _post_event(body, event.type, event.reason, event.message)


@dataclass
class OperatorState:
    settings: Settings
    runtime: Runtime | None = None
    reconciler: Reconciler | None = None
    workers: dict[str, Worker] = field(default_factory=dict)  # by ApiKey uid
    # Last labels seen per namespace: only to wake the keys of a namespace whose labels changed
    # (the decisions read the kopf index).
    namespaces: dict[str, Mapping[str, str]] = field(default_factory=dict)
    # The policy each key names: a key that starts or stops naming one changes its `keys`.
    key_policies: dict[str, str] = field(default_factory=dict)  # by ApiKey uid
    policy_specs: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # last seen, by name
    policies: PolicyReporter = field(default_factory=lambda: PolicyReporter())
    secret_watches: list[asyncio.Task[None]] = field(default_factory=list)
    usage: UsageMonitor | None = None  # with `usage:` configured


STATE = OperatorState(settings=Settings())


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff base: our only change handler is on.delete, which needs none.

    kopf would otherwise patch `status.kopf.diffbase` on creation and after every
    annotation change (a rotate/revoke request): one write per key and per request,
    plus the watch events it causes, for a diff we never read.
    """

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


# kopf logs each on.event handler call at INFO ("Handler 'secret_event' succeeded."): for
# thousands of keys that is most of the log and a noticeable share of the CPU.
QUIET_HANDLERS = ("apikey_event", "policy_event", "namespace_event")


class QuietEventHandlers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = str(record.msg)
        return not any(f"Handler '{name}'" in message for name in QUIET_HANDLERS)


def configure(settings: Settings) -> None:
    """Set the settings the handlers use; called by the CLI before kopf starts."""
    STATE.settings = settings
    STATE.workers.clear()
    STATE.namespaces.clear()
    STATE.key_policies.clear()
    STATE.policy_specs.clear()
    STATE.policies = PolicyReporter()
    STATE.runtime = None
    STATE.reconciler = None
    STATE.usage = None


def _post_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(dict(body), type=type_, reason=reason, message=message[:1024])  # type: ignore[arg-type]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    # Keep the user's metadata.annotations free of operator bookkeeping (no GitOps drift).
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "apikey-operator"
    settings.posting.reporting_instance = os.environ.get("HOSTNAME", "apikey-operator")
    settings.posting.event_name_prefix = "apikey-"
    settings.watching.server_timeout = 600
    settings.queueing.worker_limit = 1000
    if STATE.settings.standalone:
        settings.peering.standalone = True
    else:
        settings.peering.name = STATE.settings.peering_name
        settings.peering.mandatory = False
    stores = build_stores(STATE.settings)
    runtime = Runtime(
        stores=stores,
        generators=build_generators(STATE.settings),
        kube=KubeClient(),
        post_event=_post_event,
        store_slots=asyncio.Semaphore(STATE.settings.max_concurrent_store_calls),
        on_key_seen=redaction.register,
    )
    if STATE.settings.usage is not None:
        # One task for every key in its grace; it wakes a key whose decision changed.
        STATE.usage = UsageMonitor(STATE.settings.usage, wake=_wake_key, clock=runtime.clock)
        runtime.usage_report = STATE.usage.report
        STATE.usage.start()
    STATE.runtime = runtime
    STATE.reconciler = Reconciler(runtime)
    STATE.secret_watches = [
        asyncio.get_running_loop().create_task(_watch_secrets(runtime.kube, namespace))
        for namespace in (STATE.settings.namespaces or (None,))]


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in STATE.secret_watches:
        task.cancel()
    for task in STATE.secret_watches:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    STATE.secret_watches = []
    await STATE.policies.close()
    if STATE.usage is not None:
        await STATE.usage.close()
        STATE.usage = None
    runtime = STATE.runtime
    if runtime is None:
        return
    for store in runtime.stores.values():
        await store.close()
    for generator in runtime.generators.values():
        await generator.close()
    await runtime.kube.close()


def _wake_key(uid: str) -> None:
    worker = STATE.workers.get(uid)
    if worker is not None:
        worker.wake.set()


def _trigger_state(body: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (meta.get("generation"), annotations.get(f"{GROUP}/rotate"),
            annotations.get(f"{GROUP}/revoke"), meta.get("deletionTimestamp"))


@kopf.on.event(GROUP, VERSION, "apikeys")
async def apikey_event(body: kopf.Body, uid: str, type: str | None, **kwargs: Any) -> None:
    policy = None if type == "DELETED" else _policy_name(body)
    if STATE.key_policies.get(uid) != policy:
        STATE.policies.refs = kwargs["policy_refs"]
        STATE.policies.mark(STATE.key_policies.get(uid))
        STATE.policies.mark(policy)
    if policy is None:
        STATE.key_policies.pop(uid, None)
    else:
        STATE.key_policies[uid] = policy
    worker = STATE.workers.get(uid)
    if worker is None:
        return
    if type == "DELETED":
        worker.gone = True
        worker.wake.set()
        return
    # Our own status patches come back as events too; only wake for what changes a decision.
    if _trigger_state(body) != worker.trigger_state:
        worker.wake.set()


def _on_secret(body: Mapping[str, Any], type: str | None) -> None:
    """A consumer Secret changed: keep the Secret cache true and wake the key that owns it."""
    if STATE.runtime is not None:
        if type != "DELETED" and STATE.runtime.secrets.holds(body):
            return  # the echo of our own write: nothing changed that we do not know
        STATE.runtime.secrets.observed(body, deleted=type == "DELETED")
    meta = body.get("metadata", {})
    if type == "DELETED":
        # A Secret that blocked a key (SecretConflict) is gone: that key can provision now.
        for blocked in STATE.workers.values():
            if (blocked.namespace, blocked.secret_name) == (meta.get("namespace"),
                                                            meta.get("name")):
                blocked.wake.set()
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") != "ApiKey" or not ref.get("controller"):
            continue
        worker = STATE.workers.get(str(ref.get("uid")))
        if worker is None:
            continue
        digest = "" if type == "DELETED" else secret_digest(body.get("data"))
        if digest != worker.secret_digest:
            worker.wake.set()


async def _watch_secrets(kube: KubeClient, namespace: str | None) -> None:
    """Our consumer Secrets only, selected by the API server (managed-by label, and not the
    built-in store's own): a tenant's other Secrets never reach the operator, so no number
    or size of them can exhaust its memory. A Secret without our label that blocks a key
    (SecretConflict) is not seen going away; the conflict's bounded retry finds that out."""
    async for type_, body in kube.watch_secrets(namespace, {MANAGED_BY_LABEL: MANAGED_BY},
                                                (STORE_LABEL,)):
        try:
            _on_secret(body, type_)
        except Exception:  # one odd object must not end the watch for every key
            logger.exception("could not handle a Secret event")


@kopf.index(GROUP, VERSION, "rotationpolicies")
def policy_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Mapping[str, Any]]:
    """Every RotationPolicy by name. An index, because kopf lists indexed resources fully
    before any ApiKey handler or worker starts: a key never plans without its policy."""
    spec = body.get("spec")
    meta = body.get("metadata", {})
    status = body.get("status")
    return {name: {"metadata": {"name": name, "uid": meta.get("uid"),
                                "generation": meta.get("generation")},
                   "apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
                   "spec": dict(spec) if isinstance(spec, Mapping) else spec,
                   "status": dict(status) if isinstance(status, Mapping) else {}}}


def _policies(index: kopf.Index[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {name: next(iter(bodies)) for name, bodies in index.items() if len(bodies)}


@kopf.index(GROUP, VERSION, "apikeys")
def policy_refs(body: kopf.Body, uid: str, **_: Any) -> dict[str, str] | None:
    """The ApiKeys by the policy they name: each policy's `keys` in its status."""
    name = _policy_name(body)
    return {name: uid} if name is not None else None


def _policy_name(body: Mapping[str, Any]) -> str | None:
    spec = body.get("spec")
    ref = spec.get("rotationPolicyRef") if isinstance(spec, Mapping) else None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) and name else None


@kopf.on.event(GROUP, VERSION, "rotationpolicies")
async def policy_event(name: str, type: str | None, body: kopf.Body, **kwargs: Any) -> None:
    # Only a changed spec (or a deletion) changes a key's decision; the policy's own status
    # writes come back here too and must not wake thousands of workers.
    raw = body.get("spec")
    spec = None if type == "DELETED" else (dict(raw) if isinstance(raw, Mapping) else {})
    if STATE.policy_specs.get(name) != spec:
        for worker in STATE.workers.values():
            if worker.policy_name == name:
                worker.wake.set()
    if spec is None:
        STATE.policy_specs.pop(name, None)
    else:
        STATE.policy_specs[name] = copy.deepcopy(spec)
    if type != "DELETED":
        # The reporter reads the indexes kopf keeps (they are only handed to handlers).
        STATE.policies.policies = kwargs["policy_index"]
        STATE.policies.refs = kwargs["policy_refs"]
        STATE.policies.mark(name)


@kopf.index("v1", "namespaces")
def namespace_index(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, str]]:
    """Every namespace's labels, by name. An index, like the policies, so that no worker
    decides anything selector-dependent before every namespace is listed (a key would
    otherwise be judged against no labels at all right after a start)."""
    return {name: {str(k): str(v) for k, v in (body.get("metadata", {}).get("labels")
                                               or {}).items()}}


def _namespace_labels(index: kopf.Index[str, dict[str, str]],
                      namespace: str) -> dict[str, str] | None:
    bodies = index.get(namespace)
    return next(iter(bodies), None) if bodies else None


@kopf.on.event("v1", "namespaces")
async def namespace_event(body: kopf.Body, name: str, type: str | None, **_: Any) -> None:
    labels = dict(body.get("metadata", {}).get("labels") or {})
    if type == "DELETED":
        STATE.namespaces.pop(name, None)
        return
    if STATE.namespaces.get(name) == labels:
        return
    STATE.namespaces[name] = labels
    for worker in STATE.workers.values():
        if worker.namespace == name and worker.policy_name:
            worker.wake.set()


@kopf.daemon(GROUP, VERSION, "apikeys", cancellation_timeout=10.0)  # type: ignore[arg-type]
async def apikey_worker(body: kopf.Body, uid: str, namespace: str, name: str,
                        stopped: kopf.DaemonStopped, logger: kopf.Logger,
                        policy_index: kopf.Index[str, Mapping[str, Any]],
                        namespace_index: kopf.Index[str, dict[str, str]], **_: Any) -> None:
    worker = Worker(namespace=namespace, name=name)
    STATE.workers[uid] = worker
    backoff = BACKOFF_START
    conflict_backoff = CONFLICT_RETRY_START
    try:
        while not stopped:
            if worker.gone:
                await _clean_up_after_vanished(body, uid, logger)
                return
            reconciler = STATE.reconciler
            if reconciler is None:
                await asyncio.sleep(0.1)
                continue
            worker.wake.clear()
            worker.trigger_state = _trigger_state(body)
            spec = body.get("spec") or {}
            ref = spec.get("rotationPolicyRef") if isinstance(spec, Mapping) else None
            worker.policy_name = str(ref.get("name")) if isinstance(ref, Mapping) else None
            worker.secret_name = _secret_name(body)
            raw_status = body.get("status")
            status = dict(raw_status) if isinstance(raw_status, Mapping) else {}
            snapshot = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApiKey",
                        "metadata": dict(body.get("metadata", {})),
                        "spec": dict(spec) if isinstance(spec, Mapping) else spec,
                        "status": status}
            labels = _namespace_labels(namespace_index, namespace)
            if labels is None and worker.policy_name:
                # Our namespace is not indexed yet (created a moment ago): its event wakes us.
                await _sleep(worker.wake, stopped, 5.0)
                continue
            delay: float | None
            try:
                outcome = await reconciler.reconcile(snapshot, _policies(policy_index), labels)
            except ReconcileFailed as exc:
                delay = _jittered(max(backoff, exc.retry_after or 0.0))
                backoff = min(backoff * 2, BACKOFF_CAP)
                logger.warning("reconcile failed, retrying in %.1fs: %s", delay, exc)
            except Exception:  # a bug must not stop this key's worker for good
                delay = _jittered(backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
                logger.exception("unexpected error while reconciling; retrying in %.1fs", delay)
            else:
                delay = None
                backoff = BACKOFF_START
                worker.secret_digest = outcome.secret_digest
                if STATE.usage is not None:
                    STATE.usage.watch(uid, outcome.usage_watch)
                if outcome.wake_at is not None:
                    delay = max(0.0, (outcome.wake_at - reconciler.rt.clock()).total_seconds())
                if outcome.ready_reason in CONFLICT_REASONS:
                    retry = _jittered(conflict_backoff)
                    conflict_backoff = min(conflict_backoff * 2, BACKOFF_CAP)
                    delay = retry if delay is None else min(delay, retry)
                else:
                    conflict_backoff = CONFLICT_RETRY_START
            _report_findings(worker, snapshot, _policies(policy_index))
            await _sleep(worker.wake, stopped, delay)
    finally:
        STATE.workers.pop(uid, None)
        if STATE.usage is not None:
            STATE.usage.watch(uid, None)
        if STATE.runtime is not None:
            STATE.runtime.statuses.forget(uid)


def _report_findings(worker: Worker, body: Mapping[str, Any],
                     policies: Mapping[str, Mapping[str, Any]]) -> None:
    """Export this key's compliance findings (audit decides them, from the status as last
    written) and post KeyTooOld when it newly holds. After a restart a finding that still
    holds is posted once more: the worker keeps no record of what it posted."""
    runtime = STATE.runtime
    if runtime is None:
        return
    name = _policy_name(body)
    policy: Mapping[str, Any] | audit.PolicyMissing | None = None
    if name is not None:
        policy = policies.get(name) or audit.POLICY_MISSING
    current = dict(body, status=runtime.statuses.recorded(body))
    found = audit.findings_for(current, policy, runtime.clock())
    codes = frozenset(f.code for f in found)
    metrics.set_findings(worker.namespace, worker.name, codes)
    for finding in found:
        if finding.code == Reason.KEY_TOO_OLD and finding.code not in worker.findings:
            _post_event(body, "Warning", Reason.KEY_TOO_OLD, finding.message)
    worker.findings = codes


async def _clean_up_after_vanished(body: kopf.Body, uid: str, logger: kopf.Logger) -> None:
    """The object was deleted without our finalizer's on.delete (or while this worker was
    mid-step): carry out its deletionPolicy in the store and remove the consumer Secret this
    uid owns, so nothing live outlives it. Idempotent with on.delete's own cleanup."""
    runtime = STATE.runtime
    if runtime is None:
        return
    meta = body.get("metadata", {})
    for attempt in range(5):
        try:
            cleanup = await delete_from_store(runtime, body)
            _report_incomplete(body, cleanup.incomplete)
            done = cleanup.done
            break
        except (StoreError, GeneratorError) as exc:
            logger.warning("cleanup after deletion failed (attempt %d): %s", attempt + 1, exc)
            await asyncio.sleep(min(BACKOFF_CAP, BACKOFF_START * 2 ** attempt))
    else:
        done = "store cleanup failed; the entry may still exist"
    namespace, secret_name = str(meta.get("namespace")), _secret_name(body)
    try:
        secret = await runtime.kube.get_secret(namespace, secret_name)
        owners = ((secret or {}).get("metadata") or {}).get("ownerReferences") or []
        if any(o.get("kind") == "ApiKey" and o.get("uid") == uid for o in owners):
            await runtime.kube.delete_secret(namespace, secret_name)
    except KubeError as exc:  # the garbage collector removes an owned Secret anyway
        logger.warning("could not delete the Secret of the deleted ApiKey: %s", exc)
    logger.info("ApiKey is gone: %s; its worker stops", done)
    # An ApiKey created again under this name may be blocked by what we just removed.
    for other in STATE.workers.values():
        if (other.namespace, other.name) == (namespace, meta.get("name")) and not other.gone:
            other.wake.set()


def _secret_name(body: Mapping[str, Any]) -> str:
    """The consumer Secret an ApiKey names (spec.secret.name, else its own name), read without
    validating the rest of the spec: a worker needs it even for an invalid or deleted key."""
    spec = body.get("spec")
    target = spec.get("secret") if isinstance(spec, Mapping) else None
    name = target.get("name") if isinstance(target, Mapping) else None
    return name if isinstance(name, str) and name else str(body.get("metadata", {}).get("name"))


def _jittered(delay: float) -> float:
    # Full jitter keeps a fleet of failing keys from retrying against a store in lockstep.
    return min(BACKOFF_CAP, delay * (0.5 + random.random() / 2))  # noqa: S311


async def _sleep(wake: asyncio.Event, stopped: kopf.DaemonStopped, delay: float | None) -> None:
    """Sleep until woken, stopped, or `delay` seconds pass (None: no deadline)."""
    wake_task = asyncio.ensure_future(wake.wait())
    stop_task = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({wake_task, stop_task}, timeout=delay,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (wake_task, stop_task):
            task.cancel()


@kopf.on.delete(GROUP, VERSION, "apikeys")
async def apikey_deleted(body: kopf.Body, logger: kopf.Logger, **_: Any) -> None:
    runtime = STATE.runtime
    if runtime is None:
        raise kopf.TemporaryError("the operator is still starting", delay=1)
    try:
        cleanup = await delete_from_store(runtime, body)
    except (StoreError, GeneratorError) as exc:
        raise kopf.TemporaryError(f"cleanup failed: {exc}", delay=10) from None
    _report_incomplete(body, cleanup.incomplete)
    logger.info("ApiKey deleted: %s", cleanup.done)


def _report_incomplete(body: Mapping[str, Any], incomplete: str) -> None:
    if incomplete:
        logger.warning("ApiKey deleted, store cleanup incomplete: %s", incomplete)
        _post_event(body, "Warning", Reason.STORE_CLEANUP_INCOMPLETE, incomplete)
