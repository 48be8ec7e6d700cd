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
from collections import Counter, OrderedDict
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

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
    SecretCache,
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
T = TypeVar("T")
FINALIZER = f"{GROUP}/finalizer"
BACKOFF_START = 1.0
BACKOFF_CAP = 300.0
# A key blocked by an object that is not ours (SecretConflict, StoreConflict) is woken by the
# events we see, but the blocker's removal is not always one of them (a store entry, a Secret
# without our label): such keys also look again on a bounded backoff.
CONFLICT_REASONS = frozenset({Reason.SECRET_CONFLICT, Reason.STORE_CONFLICT})
CONFLICT_RETRY_START = 2.0
VANISHED_LIMIT = 10_000
RESYNC_CONCURRENCY = 8


@dataclass
class Worker:
    namespace: str
    name: str
    trigger_state: tuple[Any, ...] = ()
    secret_name: str = ""
    secret_digest: str = ""
    policy_name: str | None = None
    # Set by the DELETED event of this uid: the object is gone, whether or not our finalizer
    # ever landed on it (deleted at once after creation, it never ran on.delete).
    gone: bool = False
    # The compliance findings last exported (a new KeyTooOld posts its Warning).
    findings: frozenset[str] = frozenset()
    backoff: float = BACKOFF_START
    conflict_backoff: float = CONFLICT_RETRY_START
    # Woken since the last pass began; `_waiter` is the sleep in progress. A future and a
    # timer, not an Event and two tasks: a sleeping key should cost as little as possible.
    woken: bool = False
    first_pass: bool = True
    # A Secret event during a pass may be the echo of that pass's own write, delivered before
    # the write's response was recorded: whether it wakes the key is decided when the pass
    # ends, against the Secret cache (a second pass for every such echo was ~28 % of keys).
    busy: bool = False
    secret_event: bool = False
    # kopf's live view of the object (kopf keeps it for the daemon anyway): the newest
    # version its watch delivered, for the status write's precondition.
    body: Mapping[str, Any] | None = None
    _waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        self.woken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def secret_changed(self) -> None:
        """Its Secret changed: wake now, or (mid-pass) let `after_pass` decide."""
        if self.busy:
            self.secret_event = True
        else:
            self.wake()

    def after_pass(self, secrets: SecretCache) -> None:
        """Wake for a Secret event the pass saw arrive unless the Secret's newest known
        version holds what the pass left in it (the event was its own write)."""
        if self.secret_event:
            self.secret_event = False
            if secrets.current_digest(self.namespace, self.secret_name) != self.secret_digest:
                self.woken = True

    async def sleep(self, delay: float | None) -> None:
        """Until woken or `delay` seconds pass (None: no deadline); a cancellation (kopf
        stopping the worker) ends it at once."""
        if self.woken:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None if delay is None else loop.call_later(delay, _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# Key changes arrive in bursts (a GitOps sync of a thousand keys): a policy's status is
# written once they pause for this long, and at most this long after the first change.
POLICY_STATUS_INTERVAL = 2.0
POLICY_STATUS_MAX_DELAY = 30.0


class PolicyReporter:
    """Keeps every RotationPolicy's own status (Ready, keys) true, from one task.

    Not a kopf daemon: kopf puts a finalizer on every object a daemon serves, and a policy
    must stay deletable while the operator is down. Marked policies are reported together
    once marks have paused for `POLICY_STATUS_INTERVAL` (at most `POLICY_STATUS_MAX_DELAY`
    after the first); with nothing marked the task sleeps.

    `key_counts` is kept by the ApiKey event handler, not by a kopf index: kopf makes every
    object of an indexed kind wait for all of them to be indexed after a start, which is
    quadratic in the number of ApiKeys and deadlocks above `queueing.worker_limit`
    (kopf#1243). So the first report after a start also waits for the ApiKey listing to
    begin (`keys_arrived`: an ApiKey event came, or `_no_keys` found that none exist) and to
    pause: a count taken halfway through the listing would be written, then corrected.
    """

    def __init__(self, runtime: Runtime, key_counts: Mapping[str, int],
                 namespaces: Sequence[str] = ()) -> None:
        self.runtime = runtime
        self.key_counts = key_counts
        self.namespaces = tuple(namespaces)  # served namespaces; none: every namespace
        self.keys_arrived = False
        self.dirty: set[str] = set()
        self.recorded: dict[str, Mapping[str, Any]] = {}  # by uid: our last write
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.policies: kopf.Index[str, Mapping[str, Any]] | None = None

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
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self.keys_arrived:
                await self._no_keys()
            await self._quiet(loop.time() + POLICY_STATUS_MAX_DELAY)
            self.keys_arrived = True  # from now on a pause in marks is enough
            names, self.dirty = self.dirty, set()
            if self.policies is None:
                self.dirty |= names
                continue
            for name in sorted(names):
                bodies = self.policies.get(name)
                body = next(iter(bodies), None) if bodies else None
                if body is not None:
                    await self._report(self.runtime, body, self.key_counts.get(name, 0))

    async def _no_keys(self) -> None:
        """Before the first report: with no ApiKey at all there is no listing to wait for."""
        try:
            found = [await self.runtime.kube.any_apikeys(namespace)
                     for namespace in (self.namespaces or (None,))]
        except KubeError as exc:
            logger.debug("could not tell whether any ApiKey exists: %s", exc)
            return  # then the listing, or POLICY_STATUS_MAX_DELAY, decides
        self.keys_arrived = self.keys_arrived or not any(found)

    async def _quiet(self, deadline: float) -> None:
        """Return once no mark came for POLICY_STATUS_INTERVAL and `keys_arrived` holds,
        or at `deadline`."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            remaining = min(POLICY_STATUS_INTERVAL, deadline - loop.time())
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                if self.keys_arrived or loop.time() >= deadline:
                    return

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
class Operator:
    """Everything the handlers share, built once by the CLI (building it is the validation of
    the config) and handed to kopf as the operator's memo: no module-global state."""

    settings: Settings
    runtime: Runtime
    reconciler: Reconciler = field(init=False)
    workers: dict[str, Worker] = field(default_factory=dict)  # by ApiKey uid
    # Last labels seen per namespace: only to wake the keys of a namespace whose labels changed
    # (the decisions read the kopf index).
    namespaces: dict[str, Mapping[str, str]] = field(default_factory=dict)
    # The policy each key names: a key that starts or stops naming one changes its `keys`.
    key_policies: dict[str, str] = field(default_factory=dict)  # by ApiKey uid
    policy_keys: Counter[str] = field(default_factory=Counter)  # ApiKeys per policy name
    policy_specs: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # last seen, by name
    policies: PolicyReporter = field(init=False)
    secret_watches: list[asyncio.Task[None]] = field(default_factory=list)
    usage: UsageMonitor | None = None  # with `usage:` configured
    # Uids whose DELETED event came before their worker registered (kopf spawns the daemon
    # a moment after the first event): the worker finds out here. Bounded: a uid whose
    # daemon never starts (deleted before kopf saw it live) must not stay forever.
    vanished: OrderedDict[str, None] = field(default_factory=OrderedDict)
    # After a restart every existing key is looked at once (a crash may have left a step
    # half done); those passes queue behind these slots so that a key applied meanwhile
    # is served first, not after thousands of checks of keys that are fine.
    resync_slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(RESYNC_CONCURRENCY))

    def __post_init__(self) -> None:
        self.runtime.latest = self._latest
        self.reconciler = Reconciler(self.runtime)
        self.policies = PolicyReporter(self.runtime, self.policy_keys,
                                       self.settings.namespaces or ())

    def _latest(self, uid: str) -> Mapping[str, Any] | None:
        worker = self.workers.get(uid)
        return worker.body if worker is not None else None

    def wake_key(self, uid: str) -> None:
        """The usage monitor's way in: a key whose early-expiry decision changed plans again."""
        worker = self.workers.get(uid)
        if worker is not None:
            worker.wake()

    def memo(self) -> kopf.Memo:
        """kopf hands each handler a shallow copy of this memo: they all share this object."""
        return kopf.Memo(operator=self)


def build_operator(settings: Settings) -> Operator:
    """Build the stores, generators and the one Kubernetes client (no I/O yet); raises
    ConfigError with one line per bad store or generator."""
    kube = KubeClient()
    runtime = Runtime(
        stores=build_stores(settings, kube),
        generators=build_generators(settings, kube),
        kube=kube,
        post_event=_post_event,
        store_slots=asyncio.Semaphore(settings.max_concurrent_store_calls),
        on_key_seen=redaction.register,
    )
    metrics.KEY_TIMES.clock = runtime.clock
    operator = Operator(settings, runtime)
    if settings.usage is not None:
        # One task for every key in its grace; it wakes a key whose decision changed.
        operator.usage = UsageMonitor(settings.usage, wake=operator.wake_key, clock=runtime.clock)
        runtime.usage_report = operator.usage.report
    return operator


def _operator(memo: Any) -> Operator:
    operator = memo["operator"]
    if not isinstance(operator, Operator):
        raise RuntimeError("kopf was started without the operator's memo (handlers.build_operator)")
    return operator


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


def _post_event(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(dict(body), type=type_, reason=reason, message=message[:1024])  # type: ignore[arg-type]


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    operator = _operator(memo)
    settings.persistence.finalizer = FINALIZER
    # Keep the user's metadata.annotations free of operator bookkeeping (no GitOps drift).
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "apikey-operator"
    settings.posting.reporting_instance = os.environ.get("HOSTNAME", "apikey-operator")
    settings.posting.event_name_prefix = "apikey-"
    settings.watching.server_timeout = 600
    # No limit: with indexes, kopf's per-object workers wait after a start until every
    # object of every indexed kind is indexed, holding their slots; more namespaces or
    # policies than the limit would never finish (kopf#1243). A worker is a short-lived
    # task; our own calls are bounded by the client's pool and the store slots.
    settings.queueing.worker_limit = None
    if operator.settings.standalone:
        settings.peering.standalone = True
    else:
        settings.peering.name = operator.settings.peering_name
        settings.peering.mandatory = False
    operator.secret_watches = [
        asyncio.get_running_loop().create_task(_watch_secrets(operator, namespace))
        for namespace in (operator.settings.namespaces or (None,))]
    if operator.usage is not None:
        operator.usage.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    operator = _operator(memo)
    for task in operator.secret_watches:
        task.cancel()
    for task in operator.secret_watches:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    operator.secret_watches = []
    await operator.policies.close()
    if operator.usage is not None:
        await operator.usage.close()
    runtime = operator.runtime
    for store in runtime.stores.values():
        await store.close()
    for generator in runtime.generators.values():
        await generator.close()
    await runtime.kube.close()


def _trigger_state(body: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (meta.get("generation"), annotations.get(f"{GROUP}/rotate"),
            annotations.get(f"{GROUP}/revoke"), meta.get("deletionTimestamp"))


@kopf.on.event(GROUP, VERSION, "apikeys")
async def apikey_event(body: kopf.Body, uid: str, type: str | None, memo: kopf.Memo,
                       **kwargs: Any) -> None:
    operator = _operator(memo)
    operator.policies.keys_arrived = True
    policy = None if type == "DELETED" else _policy_name(body)
    before = operator.key_policies.get(uid)
    if before != policy:
        if before is not None:
            operator.policy_keys[before] -= 1
            if operator.policy_keys[before] <= 0:
                del operator.policy_keys[before]
            operator.policies.mark(before)
        if policy is not None:
            operator.policy_keys[policy] += 1
            operator.policies.mark(policy)
    if policy is None:
        operator.key_policies.pop(uid, None)
    else:
        operator.key_policies[uid] = policy
    worker = operator.workers.get(uid)
    if worker is None:
        if type == "DELETED":
            operator.vanished[uid] = None
            while len(operator.vanished) > VANISHED_LIMIT:
                operator.vanished.popitem(last=False)
        return
    if type == "DELETED":
        worker.gone = True
        worker.wake()
        return
    # Our own status patches come back as events too; only wake for what changes a decision.
    if _trigger_state(body) != worker.trigger_state:
        worker.wake()


def _on_secret(operator: Operator, body: Mapping[str, Any], type: str | None) -> None:
    """A consumer Secret changed: keep the Secret cache true and wake the key that owns it."""
    if type != "DELETED" and operator.runtime.secrets.holds(body):
        return  # the echo of our own write: nothing changed that we do not know
    operator.runtime.secrets.observed(body, deleted=type == "DELETED")
    meta = body.get("metadata", {})
    if type == "DELETED":
        # A Secret that blocked a key (SecretConflict) is gone: that key can provision now.
        for blocked in operator.workers.values():
            if (blocked.namespace, blocked.secret_name) == (meta.get("namespace"),
                                                            meta.get("name")):
                blocked.wake()
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") != "ApiKey" or not ref.get("controller"):
            continue
        worker = operator.workers.get(str(ref.get("uid")))
        if worker is None:
            continue
        digest = "" if type == "DELETED" else secret_digest(body.get("data"))
        if digest != worker.secret_digest:
            worker.secret_changed()


async def _watch_secrets(operator: Operator, namespace: str | None) -> None:
    """Our consumer Secrets only, selected by the API server (managed-by label, and not the
    built-in store's own): a tenant's other Secrets never reach the operator, so no number
    or size of them can exhaust its memory. A Secret without our label that blocks a key
    (SecretConflict) is not seen going away; the conflict's bounded retry finds that out."""
    kube = operator.runtime.kube
    async for type_, body in kube.watch_secrets(namespace, {MANAGED_BY_LABEL: MANAGED_BY},
                                                (STORE_LABEL,)):
        try:
            _on_secret(operator, body, type_)
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


def _policy_name(body: Mapping[str, Any]) -> str | None:
    spec = body.get("spec")
    ref = spec.get("rotationPolicyRef") if isinstance(spec, Mapping) else None
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) and name else None


@kopf.on.event(GROUP, VERSION, "rotationpolicies")
async def policy_event(name: str, type: str | None, body: kopf.Body, memo: kopf.Memo,
                       **kwargs: Any) -> None:
    operator = _operator(memo)
    # Only a changed spec (or a deletion) changes a key's decision; the policy's own status
    # writes come back here too and must not wake thousands of workers.
    raw = body.get("spec")
    spec = None if type == "DELETED" else (dict(raw) if isinstance(raw, Mapping) else {})
    if operator.policy_specs.get(name) != spec:
        for worker in operator.workers.values():
            if worker.policy_name == name:
                worker.wake()
    if spec is None:
        operator.policy_specs.pop(name, None)
    else:
        operator.policy_specs[name] = copy.deepcopy(spec)
    if type != "DELETED":
        # The reporter reads the indexes kopf keeps (they are only handed to handlers).
        operator.policies.policies = kwargs["policy_index"]
        operator.policies.mark(name)


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
async def namespace_event(body: kopf.Body, name: str, type: str | None, memo: kopf.Memo,
                          **_: Any) -> None:
    operator = _operator(memo)
    labels = dict(body.get("metadata", {}).get("labels") or {})
    if type == "DELETED":
        operator.namespaces.pop(name, None)
        return
    if operator.namespaces.get(name) == labels:
        return
    operator.namespaces[name] = labels
    for worker in operator.workers.values():
        if worker.namespace == name and worker.policy_name:
            worker.wake()


# kopf stops a daemon (deletion, a paused replica, exit) by cancelling it at once and then
# waiting up to this long: a sleeping worker simply ends, a step in flight is shielded and
# finishes first (steps are crash-safe anyway; a finished one is also recorded and announced).
STEP_GRACE = 10.0


@kopf.daemon(GROUP, VERSION, "apikeys", cancellation_timeout=STEP_GRACE)  # type: ignore[arg-type]
async def apikey_worker(body: kopf.Body, uid: str, namespace: str, name: str,
                        stopped: kopf.DaemonStopped, logger: kopf.Logger,
                        policy_index: kopf.Index[str, Mapping[str, Any]],
                        namespace_index: kopf.Index[str, dict[str, str]], memo: kopf.Memo,
                        **_: Any) -> None:
    operator = _operator(memo)
    worker = Worker(namespace=namespace, name=name, body=body)
    operator.workers[uid] = worker
    if uid in operator.vanished:
        del operator.vanished[uid]
        worker.gone = True
    try:
        while not stopped:
            if worker.gone:
                await _shielded(_clean_up_after_vanished(operator, body, uid, logger))
                return
            worker.woken = False
            worker.busy = True
            try:
                delay = await _shielded(_pass(operator, worker, body, logger, policy_index,
                                              namespace_index))
            finally:
                worker.busy = False
            worker.after_pass(operator.runtime.secrets)
            await worker.sleep(delay)
    finally:
        operator.workers.pop(uid, None)
        if operator.usage is not None:
            operator.usage.watch(uid, None)
        operator.runtime.statuses.forget(uid)


async def _shielded(step: Coroutine[Any, Any, T]) -> T:
    """Run `step` to its end even when kopf cancels the worker meanwhile, then let the
    cancellation through."""
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, STEP_GRACE)
        raise


async def _pass(operator: Operator, worker: Worker, body: kopf.Body, logger: kopf.Logger,
                policy_index: kopf.Index[str, Mapping[str, Any]],
                namespace_index: kopf.Index[str, dict[str, str]]) -> float | None:
    """One reconcile of the key as `body` shows it now; how long to sleep after it (None: until
    woken). Its own function so that nothing of the snapshot stays alive while the worker
    sleeps: thousands of sleeping workers are most of the operator's memory."""
    reconciler = operator.reconciler
    worker.trigger_state = _trigger_state(body)
    spec = body.get("spec") or {}
    worker.policy_name = _policy_name(body)
    worker.secret_name = _secret_name(body)
    raw_status = body.get("status")
    status = dict(raw_status) if isinstance(raw_status, Mapping) else {}
    snapshot = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApiKey",
                "metadata": dict(body.get("metadata", {})),
                "spec": dict(spec) if isinstance(spec, Mapping) else spec,
                "status": status}
    labels = _namespace_labels(namespace_index, worker.namespace)
    if labels is None and worker.policy_name:
        return 5.0  # our namespace is not indexed yet (created a moment ago): its event wakes us
    delay: float | None
    policies = _policies(policy_index)
    try:
        if worker.first_pass and _settled(snapshot):
            async with operator.resync_slots:
                outcome = await reconciler.reconcile(snapshot, policies, labels)
        else:
            outcome = await reconciler.reconcile(snapshot, policies, labels)
    except ReconcileFailed as exc:
        delay = _jittered(max(worker.backoff, exc.retry_after or 0.0))
        worker.backoff = min(worker.backoff * 2, BACKOFF_CAP)
        logger.warning("reconcile failed, retrying in %.1fs: %s", delay, exc)
    except Exception:  # a bug must not stop this key's worker for good
        delay = _jittered(worker.backoff)
        worker.backoff = min(worker.backoff * 2, BACKOFF_CAP)
        logger.exception("unexpected error while reconciling; retrying in %.1fs", delay)
    else:
        delay = None
        worker.first_pass = False
        worker.backoff = BACKOFF_START
        worker.secret_digest = outcome.secret_digest
        if operator.usage is not None:
            operator.usage.watch(str(body.get("metadata", {}).get("uid", "")), outcome.usage_watch)
        if outcome.wake_at is not None:
            delay = max(0.0, (outcome.wake_at - reconciler.rt.clock()).total_seconds())
        if outcome.ready_reason in CONFLICT_REASONS:
            retry = _jittered(worker.conflict_backoff)
            worker.conflict_backoff = min(worker.conflict_backoff * 2, BACKOFF_CAP)
            delay = retry if delay is None else min(delay, retry)
        else:
            worker.conflict_backoff = CONFLICT_RETRY_START
    _report_findings(operator.runtime, worker, snapshot, policies)
    return delay


def _settled(body: Mapping[str, Any]) -> bool:
    """Provisioned, its spec seen, no rotate or revoke request waiting: a key whose pass
    after a restart only checks (a key that asks for something is not queued behind them)."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    annotations = meta.get("annotations") or {}
    return (isinstance(status.get("currentKey"), Mapping)
            and status.get("observedGeneration") == meta.get("generation")
            and annotations.get(f"{GROUP}/rotate") in (None, status.get("lastHandledRotate"))
            and annotations.get(f"{GROUP}/revoke") in (None, status.get("lastHandledRevoke")))


def _report_findings(runtime: Runtime, worker: Worker, body: Mapping[str, Any],
                     policies: Mapping[str, Mapping[str, Any]]) -> None:
    """Export this key's compliance findings (audit decides them, from the status as last
    written) and post KeyTooOld when it newly holds. After a restart a finding that still
    holds is posted once more: the worker keeps no record of what it posted."""
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


async def _clean_up_after_vanished(operator: Operator, body: kopf.Body, uid: str,
                                   logger: kopf.Logger) -> None:
    """The object was deleted without our finalizer's on.delete (or while this worker was
    mid-step): carry out its deletionPolicy in the store and remove the consumer Secret this
    uid owns, so nothing live outlives it. Idempotent with on.delete's own cleanup."""
    runtime = operator.runtime
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
    for other in operator.workers.values():
        if (other.namespace, other.name) == (namespace, meta.get("name")) and not other.gone:
            other.wake()


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


@kopf.on.delete(GROUP, VERSION, "apikeys")
async def apikey_deleted(body: kopf.Body, logger: kopf.Logger, memo: kopf.Memo,
                         **_: Any) -> None:
    runtime = _operator(memo).runtime
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
