"""The rotation state machine (pure: no I/O, the clock comes in with the observation).

`plan(observation)` looks at everything one ApiKey's decision needs and returns
the next single step (or none), the conditions, the status, and when to wake up.
The caller performs the step, folds its effect into the observation with
`advance`, and plans again until no step is left. Because every step is
idempotent and the plan is derived only from what the store and the Secret
hold, a crash between any two steps converges when planning resumes.

A rotation is create -> project -> promote -> expire (the contract):

* create: a pending version is written to the store;
* project: the Secret gets pending as current and the old current as previous;
* promote: in the store pending becomes current, current becomes previous
  valid until now + grace;
* expire: once the grace ends, the previous key leaves the Secret first and is
  revoked in the store second, so the Secret never holds a revoked key.

A graceful rotation (schedule, rotate request, key-format change) never cuts the
grace of a previous key: it waits, shown as `status.queuedRotation`, until that
grace ends. Only an emergency revoke destroys every old version at once. So the
store holds at most current + previous + pending.

The plan also decides what the user is told. Its Events come from comparing the
status the user last saw (`observation.status`, durable) with the status this
plan writes, not from the steps taken on the way: a step whose answer was lost
(a crash, a cancelled request, another replica finishing it) is still announced
once, when its outcome is first recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from apikey_operator import grace as usage_grace
from apikey_operator.durations import format_duration
from apikey_operator.grace import KeyUsage, UsageWatch
from apikey_operator.keys import KeyFormat, fingerprint
from apikey_operator.placement import TARGET, Pool, StoreEntry, entry_state, external_ids, pool
from apikey_operator.reasons import BLOCKING_REASONS, Reason
from apikey_operator.spec import (
    DEFAULT_GRACE,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ApiKeySpec,
    RestartTarget,
    RotationPolicy,
)
from apikey_operator.stores.base import (
    Capabilities,
    KeyRef,
    StoreState,
    VersionDocument,
    format_time,
    parse_time,
    promoted,
    promoted_revoking,
    with_initial,
    with_pending,
    without,
)

EventType = Literal["Normal", "Warning"]
Trigger = Literal["initial", "schedule", "rotate", "revoke", "format", "storeChange"]

VERSION_ANNOTATION = "apikeys.dev/version"
FINGERPRINT_ANNOTATION = "apikeys.dev/fingerprint"
ROTATED_AT_ANNOTATION = "apikeys.dev/rotated-at"
SCOPES_ANNOTATION = "apikeys.dev/scopes"
# Written with the first half of an early expire (the Secret loses the previous key): the
# version whose grace ended early. It makes the early end durable in the same write, so a
# crash before the revoke finishes the revoke instead of putting the key back.
GRACE_ENDED_EARLY_ANNOTATION = "apikeys.dev/grace-ended-early"
RESTART_ANNOTATION_PREFIX = "apikeys.dev/restart-"
MAX_TOKEN_LENGTH = 63
GRACEFUL_TRIGGERS = ("schedule", "rotate", "format", "storeChange")


def request_token(value: str) -> str:
    """How a one-shot annotation value is recorded: as is when short and plain, else hashed.

    Annotation values can be huge or contain anything; the token must fit in a
    status field, a Vault custom-metadata value and an AWS tag value.
    """
    if len(value) <= MAX_TOKEN_LENGTH and value.isascii() and value.isprintable():
        return value
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:32]


@dataclass(frozen=True)
class SecretView:
    """The consumer Secret as observed. `data` holds decoded key material."""

    exists: bool = False
    owner_uid: str = ""
    managed: bool = False
    data: Mapping[str, str] = field(default_factory=dict, repr=False)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyView:
    """The referenced RotationPolicy: absent, unparseable (`error`) or parsed."""

    name: str
    found: bool
    policy: RotationPolicy | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observation:
    now: datetime
    ref: KeyRef
    generation: int
    spec: ApiKeySpec | None
    spec_error: str | None = None
    store_error: str | None = None
    store_location: str = ""
    store: StoreState = field(default_factory=StoreState)
    # spec.store's config name, and this ApiKey's entries in the other stores its status
    # names (a store move, see `placement`); names it gives that are not configured.
    store_name: str = ""
    elsewhere: tuple[StoreEntry, ...] = ()
    unreachable: tuple[str, ...] = ()
    capabilities: Capabilities = field(default_factory=Capabilities)
    # Keys come from a vendor (a webhook generator), which must revoke each one itself.
    vendor_keys: bool = False
    secret: SecretView = field(default_factory=SecretView)
    # Other Secrets this ApiKey owns: where it projected before spec.secret.name changed.
    stale_secrets: tuple[str, ...] = ()
    policy: PolicyView | None = None
    namespace_labels: Mapping[str, str] | None = None
    rotate_request: str | None = None
    revoke_request: str | None = None
    # The status as the user last saw it: what the Events of this plan are relative to.
    status: Mapping[str, Any] = field(default_factory=dict)
    # What the usage source last said of the key in its grace (None: no source, no answer).
    usage: KeyUsage | None = None


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: Reason
    message: str


@dataclass(frozen=True)
class CreateInitial:
    """The first version, written already current (stores with `write_initial`)."""

    version: int
    created_at: datetime
    key_format: KeyFormat
    scopes: tuple[str, ...]
    handles: Mapping[str, str]

    def document(self, key: str, external_id: str = "") -> VersionDocument:
        return VersionDocument(version=self.version, key=key, created_at=self.created_at,
                               key_format=self.key_format, scopes=self.scopes,
                               handles=dict(self.handles), external_id=external_id,
                               trigger="initial")


@dataclass(frozen=True)
class CreatePending:
    """Step 1: the executor generates a key in `key_format` and writes it as pending."""

    version: int
    created_at: datetime
    key_format: KeyFormat
    scopes: tuple[str, ...]
    handles: Mapping[str, str]
    trigger: Trigger

    def document(self, key: str, external_id: str = "") -> VersionDocument:
        return VersionDocument(version=self.version, key=key, created_at=self.created_at,
                               key_format=self.key_format, scopes=self.scopes,
                               handles=dict(self.handles), external_id=external_id,
                               trigger=self.trigger)


@dataclass(frozen=True)
class WriteSecret:
    """Step 2 (and drift repair, and the first half of expire): make the Secret exactly this."""

    name: str
    data: Mapping[str, str] = field(repr=False)
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    purpose: Literal["project", "restore", "expire"]
    # Only a repair is announced by its step: no status field records that it happened.
    event: Event | None = None


@dataclass(frozen=True)
class DeleteSecret:
    """Remove a Secret this ApiKey no longer projects into (spec.secret.name moved), once
    the new one holds the keys: no Secret is left holding a key that is later revoked."""

    name: str
    event: Event


@dataclass(frozen=True)
class Promote:
    """Step 3, in the store `store` names (`TARGET`: spec.store; a store move's old
    store while it finishes a rotation interrupted there)."""

    version: int
    previous_valid_until: datetime
    trigger: str
    store: str = TARGET


@dataclass(frozen=True)
class PromoteRevoking:
    """Emergency, in one store call: pending `version` becomes current, the old current
    version `revokes` is destroyed (stores with `promote_revoking`; the Secret no longer
    holds the old key)."""

    version: int
    revokes: int
    store: str = TARGET


@dataclass(frozen=True)
class Revoke:
    """Step 4 (and emergency revoke): destroy `version` in the store (at the vendor first
    when it has an `external_id`)."""

    version: int
    kind: Literal["expired", "emergency"]
    external_id: str = ""
    store: str = TARGET


@dataclass(frozen=True)
class RetireStore:
    """Delete this ApiKey's whole entry in a store it has moved away from, once the Secret
    holds none of its keys (the old key's grace is over): the expire step of a store move.
    Vendor keys (`external_ids`) are revoked at the vendor first."""

    store: str
    kind: Literal["expired", "emergency"]
    external_ids: tuple[str, ...] = ()


Step = (CreateInitial | CreatePending | WriteSecret | DeleteSecret | Promote | PromoteRevoking
        | Revoke | RetireStore)


@dataclass(frozen=True)
class Readiness:
    """What the Ready, Stalled and Scheduled conditions say (built by `conditions`)."""

    ready: bool
    reason: Reason
    message: str
    stalled: str | None = None  # InvalidSpec: the message, when no retry can help
    scheduled: tuple[bool, Reason, str] | None = None
    cleanup: str | None = None  # StoreCleanupIncomplete: an entry left in an unconfigured store


@dataclass(frozen=True)
class Plan:
    step: Step | None
    readiness: Readiness
    status: Mapping[str, Any]
    wake_at: datetime | None
    # Roll these workloads to this token (idempotent: the same token never restarts twice).
    restarts: tuple[RestartTarget, ...] = ()
    restart_token: str = ""
    # Set when the plan is blocked by a problem a human must fix (no retries help).
    blocked: bool = False
    # What to tell the user once this plan's status is recorded (final plans only).
    events: tuple[Event, ...] = ()
    # A key in its grace: what the usage monitor watches for it (None: nothing to watch).
    usage_watch: UsageWatch | None = None


def plan(obs: Observation) -> Plan:
    """The next step for one ApiKey, with its readiness, status, Events and wake-up time."""
    grace = _grace_and_period(obs)[0]
    placed = _pool(obs, grace)
    # The state machine plans with every entry's versions as one; each step then goes to
    # the store that holds its version.
    viewed = replace(obs, store=placed.view, store_location=placed.location)
    result = _plan(viewed, placed)
    if result.step is not None:
        result = replace(result, step=_placed_step(obs, placed, result.step))
    else:
        result = replace(result, events=_key_events(viewed, result.status, grace))
    return _with_placement(obs, placed, result)


def _pool(obs: Observation, grace: timedelta) -> Pool:
    """The entries folded into one view, told apart by what the status records."""
    def named(value: object) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        return TARGET if value == obs.store_name else value
    def shown(field_name: str, part: str) -> str:
        entry = obs.status.get(field_name)
        return str(entry.get(part) or "") if isinstance(entry, Mapping) else ""
    def shown_time(field_name: str, part: str) -> datetime | None:
        try:
            return parse_time(shown(field_name, part))
        except ValueError:
            return None
    return pool(obs.ref, obs.store, obs.store_location, obs.elsewhere, grace,
                recorded=named(obs.status.get("store")),
                current_fingerprint=shown("currentKey", "fingerprint"),
                current_created=shown_time("currentKey", "createdAt"),
                previous_fingerprint=shown("previousKey", "fingerprint"),
                previous_until=shown_time("previousKey", "validUntil"), now=obs.now)


def _placed_step(obs: Observation, placed: Pool, step: Step) -> Step:
    """`step` sent to the store holding its version. Revoking the key left in a store the
    ApiKey has moved away from deletes that whole entry: nothing stays behind there."""
    if isinstance(step, Promote | PromoteRevoking):
        return replace(step, store=placed.pending_at)
    if isinstance(step, Revoke):
        # The planner revokes only the previous version (in its grace, or at once).
        where = placed.previous_at
        if where == placed.active:
            return replace(step, store=where)
        step = RetireStore(where, step.kind)
    if isinstance(step, RetireStore):
        return replace(step, external_ids=external_ids(
            entry_state(obs.store, obs.elsewhere, step.store)))
    return step


def _with_placement(obs: Observation, placed: Pool, result: Plan) -> Plan:
    """status.store (where the current key lives) and status.formerStores (other stores
    still holding this ApiKey's versions, configured or not): what a restart, a second move
    and a deletion read to find every entry."""
    status = dict(result.status)
    if obs.spec is None or obs.spec_error or obs.store_error:
        # The stores were not consulted: keep what the status last said.
        status["store"] = obs.status.get("store")
        status["formerStores"] = obs.status.get("formerStores")
        return replace(result, status=status)
    name = obs.spec.store
    active = placed.active or name
    former = {entry or name for entry in placed.entries} | set(obs.unreachable)
    former.discard(active)
    status["store"] = active if placed.view.current is not None else None
    status["formerStores"] = sorted(former) or None
    readiness = result.readiness
    if obs.unreachable:
        names = ", ".join(sorted(obs.unreachable))
        readiness = replace(readiness, cleanup=(
            f"store{'s' if len(obs.unreachable) > 1 else ''} {names} still hold"
            f"{'' if len(obs.unreachable) > 1 else 's'} this ApiKey's entry but "
            f"{'are' if len(obs.unreachable) > 1 else 'is'} no longer configured: its keys "
            "there could not be revoked; configure the store again (the entry is then "
            "deleted) or delete the entry by hand"))
    return replace(result, status=status, readiness=readiness)


def _plan(obs: Observation, placed: Pool) -> Plan:
    spec = obs.spec
    if spec is None or obs.spec_error:
        message = _with_key_state(obs, obs.spec_error or "invalid spec")
        return _blocked(obs, Reason.INVALID_SPEC, message, stalled=message)
    if obs.store_error:
        message = _with_key_state(obs, obs.store_error)
        return _blocked(obs, Reason.INVALID_SPEC, message, stalled=message)
    store = obs.store
    if not store.owned_by(obs.ref):
        message = (
            f"the store entry {obs.store_location} was not created for this ApiKey; "
            "it is left untouched"
        )
        return _blocked(obs, Reason.STORE_CONFLICT, message)
    secret = obs.secret
    if secret.exists and (secret.owner_uid != obs.ref.uid or not secret.managed):
        message = (
            f"Secret {spec.secret_name} exists and is not owned by this ApiKey; "
            "it is left untouched"
        )
        return _blocked(obs, Reason.SECRET_CONFLICT, message)

    ctx = _Context(obs, spec, _policy_problem(obs), *_grace_and_period(obs))
    now = obs.now

    # An interrupted rotation always finishes first: the pending key may already be in use.
    if store.pending is not None:
        pending = store.pending
        emergency = pending.trigger == "revoke"
        desired = _desired_secret(obs, spec, pending, None if emergency else store.current)
        if desired is not None:
            return ctx.step(desired)
        old = store.current
        if (emergency and old is not None and store.previous is None
                and obs.capabilities.promote_revoking and not obs.vendor_keys
                and placed.current_at == placed.pending_at
                and old.key not in obs.secret.data.values()):
            return ctx.step(PromoteRevoking(pending.version, old.version))
        until = now if emergency else now + ctx.grace
        return ctx.step(Promote(pending.version, until, pending.trigger))

    previous = store.previous
    if obs.stale_secrets and store.current is not None:
        # spec.secret.name moved: the new Secret first, then the old one goes (before any
        # expiry could revoke a key the old one still holds).
        move = _secret_step(obs, spec, store.current, previous, "project")
        if _differs(obs.secret, move):
            return ctx.step(move)
        stale = obs.stale_secrets[0]
        return ctx.step(DeleteSecret(stale, Event(
            "Normal", Reason.SECRET_REMOVED,
            f"Secret {stale} deleted: the key is now projected into Secret {spec.secret_name}")))

    if placed.leftovers and store.current is not None:
        # An entry holding none of the versions in use (an interrupted earlier move): the
        # Secret first holds only what is in use, then that entry goes.
        desired = _desired_secret(obs, spec, store.current, previous)
        if desired is not None:
            return ctx.step(desired)
        return ctx.step(RetireStore(placed.leftovers[0], "expired"))

    # The grace of the previous key is over: out of the Secret first, then out of the store.
    # An early end (the key provably unused) takes the very same steps; only its deadline
    # differs.
    early = previous is not None and _ends_early(obs, ctx)
    if previous is not None and (store.previous_valid_until is None
                                 or store.previous_valid_until <= now or early):
        kind: Literal["expired", "emergency"] = (
            "emergency" if store.current is not None and store.current.trigger == "revoke"
            else "expired")
        return ctx.step(_expire(obs, spec, previous, kind, early=early))

    if store.current is None:
        if ctx.problem is not None and ctx.problem[0] != Reason.POLICY_NOT_FOUND:
            return ctx.finish()
        handles = {k: v for k, v in (("rotate", obs.rotate_request),
                                     ("revoke", obs.revoke_request)) if v}
        if obs.capabilities.write_initial:
            return ctx.step(CreateInitial(_next_version(obs), now, spec.key_format,
                                          spec.scopes, handles))
        return ctx.step(_create(obs, spec, handles, "initial"))

    moving = placed.active != TARGET
    trigger, handles = _rotation_trigger(obs, spec, ctx.problem, ctx.rotate_every, moving)
    if trigger == "revoke" and previous is not None:
        # An emergency revokes every old version, the one still in its grace first.
        return ctx.step(_expire(obs, spec, previous, "emergency"))
    desired = _desired_secret(obs, spec, store.current, previous)
    if desired is not None:
        return ctx.step(desired)
    if trigger is not None and previous is not None:
        # A graceful rotation never cuts a grace: it waits for it to end, visibly.
        return ctx.finish(queued=(trigger, _requested_at(obs, trigger, ctx.rotate_every)))
    if trigger is not None:
        if moving:
            # The tokens the old store answered travel with the key: none is acted on twice.
            handles = {**store.handled, **handles}
        return ctx.step(_create(obs, spec, handles, trigger))
    return ctx.finish()


@dataclass(frozen=True)
class _Context:
    """What every plan for this observation shares."""

    obs: Observation
    spec: ApiKeySpec
    problem: tuple[Reason, str] | None
    grace: timedelta
    rotate_every: timedelta | None

    def step(self, step: Step) -> Plan:
        return replace(self.finish(), step=step, restarts=(), restart_token="")

    def finish(self, queued: tuple[Trigger, datetime] | None = None) -> Plan:
        return _finish(self, queued)


def _with_key_state(obs: Observation, message: str) -> str:
    """A blocking message says whether a key exists (the store was not consulted: status)."""
    current = obs.status.get("currentKey")
    if isinstance(current, Mapping) and current.get("version") is not None:
        return f"{message}; key version {current.get('version')} stays current"
    return f"{message}; no key has been provisioned yet"


def _requested_at(obs: Observation, trigger: Trigger, rotate_every: timedelta | None) -> datetime:
    """When the queued rotation was asked for: the schedule's due time, else when first seen
    (kept from the recorded status, so a restart does not move it)."""
    current = obs.store.current
    if trigger == "schedule" and current is not None and rotate_every is not None:
        return current.created_at + rotate_every
    queued = obs.status.get("queuedRotation")
    if isinstance(queued, Mapping) and queued.get("trigger") == trigger:
        try:
            return parse_time(str(queued.get("requestedAt")))
        except ValueError:
            pass
    return obs.now


def _unhandled(obs: Observation, kind: str, token: str | None) -> bool:
    if not token:
        return False
    handled = obs.store.handled.get(kind)
    return token != handled


def _rotation_trigger(
    obs: Observation, spec: ApiKeySpec, policy_problem: tuple[Reason, str] | None,
    rotate_every: timedelta | None, moving: bool = False,
) -> tuple[Trigger | None, dict[str, str]]:
    """Which rotation (if any) is due now, and the request tokens it will answer."""
    current = obs.store.current
    assert current is not None
    outstanding = {
        kind: token
        for kind, token in (("rotate", obs.rotate_request), ("revoke", obs.revoke_request))
        if token and _unhandled(obs, kind, token)
    }
    if "revoke" in outstanding:
        # An emergency answers any graceful request too: the new key supersedes both.
        return "revoke", outstanding
    blocked_by_policy = policy_problem is not None and policy_problem[0] in (
        Reason.POLICY_NOT_ALLOWED, Reason.INVALID_SPEC)
    if blocked_by_policy:
        return None, {}
    if "rotate" in outstanding:
        return "rotate", outstanding
    if moving:
        return "storeChange", {}
    if current.key_format != spec.key_format:
        return "format", {}
    if rotate_every is not None and obs.now >= current.created_at + rotate_every:
        return "schedule", {}
    return None, {}


def _create(obs: Observation, spec: ApiKeySpec, handles: Mapping[str, str],
            trigger: Trigger) -> CreatePending:
    return CreatePending(
        version=_next_version(obs),
        created_at=obs.now,
        key_format=spec.key_format,
        scopes=spec.scopes,
        handles=dict(handles),
        trigger=trigger,
    )


def _next_version(obs: Observation) -> int:
    """The next version number. With an entry left in a store that is no longer configured,
    above every version the status shows too: a version number never names two keys."""
    number = obs.store.next_version()
    if obs.unreachable:
        for field_name in ("currentKey", "previousKey"):
            recorded = _recorded(obs.status, field_name)
            if recorded is not None:
                number = max(number, recorded[0] + 1)
    return number


def _expire(obs: Observation, spec: ApiKeySpec, previous: VersionDocument,
            kind: Literal["expired", "emergency"], early: bool = False) -> Step:
    """Remove the previous key from the Secret, or, once it is gone there, revoke it."""
    current = obs.store.current
    assert current is not None
    if obs.secret.exists and spec.previous_key in obs.secret.data:
        step = _secret_step(obs, spec, current, None, "expire")
        if early:
            annotations = {**step.annotations, GRACE_ENDED_EARLY_ANNOTATION: str(previous.version)}
            step = replace(step, annotations=annotations)
        return step
    return Revoke(previous.version, kind, previous.external_id)


def _usage_watch(obs: Observation, ctx: _Context) -> UsageWatch | None:
    """What the usage monitor needs of this key, while its previous key is in its grace."""
    store = obs.store
    if (store.current is None or store.previous is None or store.previous_valid_until is None
            or store.pending is not None or store.current.trigger == "revoke"):
        return None
    policy = obs.policy.policy if (obs.policy is not None and ctx.problem is None) else None
    recorded = obs.status.get("previousKey")
    reported = (isinstance(recorded, Mapping)
                and recorded.get("version") == store.previous.version
                and bool(recorded.get("inUseReportedAt")))
    return UsageWatch(current_fingerprint=fingerprint(store.current.key),
                      previous_fingerprint=fingerprint(store.previous.key),
                      valid_until=store.previous_valid_until, grace=ctx.grace,
                      early_expiry=policy.early_expiry if policy is not None else None,
                      in_use_reported=reported)


def _verdict(obs: Observation, ctx: _Context) -> usage_grace.Verdict:
    watch = _usage_watch(obs, ctx)
    if watch is None:
        return usage_grace.Verdict()
    return usage_grace.decide(obs.now, watch, obs.usage)


def _ends_early(obs: Observation, ctx: _Context) -> bool:
    """The previous key's grace ends before its deadline: provably unused now, or an early end
    already begun (the Secret says so: a crash came between its two halves)."""
    previous = obs.store.previous
    if previous is None or (obs.store.current is not None
                            and obs.store.current.trigger == "revoke"):
        return False
    begun = obs.secret.annotations.get(GRACE_ENDED_EARLY_ANNOTATION) == str(previous.version)
    if begun and ctx.spec.previous_key not in obs.secret.data:
        return True
    return _verdict(obs, ctx).end_early


def _desired_secret(obs: Observation, spec: ApiKeySpec, current: VersionDocument,
                    previous: VersionDocument | None) -> WriteSecret | None:
    """A WriteSecret if the Secret differs from what it should hold, else None."""
    purpose: Literal["project", "restore"] = "project"
    step = _secret_step(obs, spec, current, previous, purpose)
    if not _differs(obs.secret, step):
        return None
    # The Secret matches neither the old nor the new projection: someone deleted or edited it.
    projected_before = obs.status.get("currentKey", {}) if isinstance(
        obs.status.get("currentKey"), Mapping) else {}
    if projected_before.get("version") == current.version and obs.store.pending is None:
        return replace(step, purpose="restore", event=Event(
            "Normal", Reason.SECRET_RESTORED,
            f"Secret {spec.secret_name} was deleted or edited; restored key version "
            f"{current.version} from the store (no rotation)",
        ))
    return step


def _differs(secret: SecretView, step: WriteSecret) -> bool:
    """Whether the Secret is not yet what `step` writes."""
    return not (secret.exists and dict(secret.data) == dict(step.data)
                and all(secret.labels.get(k) == v for k, v in step.labels.items())
                and all(secret.annotations.get(k) == v for k, v in step.annotations.items()))


def _secret_step(obs: Observation, spec: ApiKeySpec, current: VersionDocument,
                 previous: VersionDocument | None,
                 purpose: Literal["project", "restore", "expire"]) -> WriteSecret:
    data = {spec.current_key: current.key}
    if previous is not None:
        data[spec.previous_key] = previous.key
    labels = dict(spec.secret_labels)
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    annotations = dict(spec.secret_annotations)
    annotations.update({
        VERSION_ANNOTATION: str(current.version),
        FINGERPRINT_ANNOTATION: fingerprint(current.key),
        ROTATED_AT_ANNOTATION: format_time(current.created_at),
        SCOPES_ANNOTATION: ",".join(spec.scopes),
    })
    return WriteSecret(spec.secret_name, data, labels, annotations, purpose)


def _policy_problem(obs: Observation) -> tuple[Reason, str] | None:
    """(reason, message) when the referenced policy cannot schedule this key."""
    view = obs.policy
    if view is None:
        return None
    if not view.found:
        return (Reason.POLICY_NOT_FOUND,
                f"RotationPolicy {view.name} not found: the key is not scheduled for rotation")
    current = obs.store.current
    kept = (f"key version {current.version} is kept and not rotated" if current is not None
            else "no key has been provisioned yet")
    if view.error or view.policy is None:
        return (Reason.INVALID_SPEC, f"RotationPolicy {view.name}: {view.error}; {kept}")
    selector = view.policy.namespace_selector
    if selector is not None and not selector.admits(obs.namespace_labels or {}):
        return (Reason.POLICY_NOT_ALLOWED,
                f"RotationPolicy {view.name} does not admit namespace {obs.ref.namespace}; "
                f"{kept}")
    return None


def _grace_and_period(obs: Observation) -> tuple[timedelta, timedelta | None]:
    view = obs.policy
    if view is not None and view.policy is not None and _policy_problem(obs) is None:
        return view.policy.grace_period, view.policy.rotate_every
    return DEFAULT_GRACE, None


def _readiness(ctx: _Context) -> Readiness:
    obs, problem = ctx.obs, ctx.problem
    store = obs.store
    current = store.current
    blocking = problem if problem is not None and problem[0] in (
        Reason.POLICY_NOT_ALLOWED, Reason.INVALID_SPEC) else None
    if blocking is not None:
        ready, reason, message = False, blocking[0], blocking[1]
    elif current is None or store.pending is not None:
        ready, reason, message = False, Reason.PROVISIONING, "a key version is being written"
    else:
        ready, reason, message = (True, Reason.PROVISIONED,
                                  f"key version {current.version} is current in "
                                  f"{obs.store_location}")
    stalled = problem[1] if problem is not None and problem[0] == Reason.INVALID_SPEC else None
    scheduled: tuple[bool, Reason, str] | None = None
    if problem is not None and problem[0] == Reason.POLICY_NOT_FOUND:
        scheduled = (False, Reason.POLICY_NOT_FOUND, problem[1])
    elif obs.policy is None:
        scheduled = (False, Reason.NO_POLICY,
                     "no rotationPolicyRef: the key rotates only on request")
    elif problem is None:
        scheduled = (True, Reason.POLICY_APPLIED,
                     f"rotates every {format_duration(ctx.rotate_every or timedelta())} under "
                     f"RotationPolicy {obs.policy.name}")
    return Readiness(ready, reason, message, stalled, scheduled)


def _finish(ctx: _Context, queued: tuple[Trigger, datetime] | None) -> Plan:
    obs, spec = ctx.obs, ctx.spec
    store = obs.store
    current = store.current

    wake: list[datetime] = []
    next_rotation = None
    if current is not None and ctx.rotate_every is not None:
        next_rotation = current.created_at + ctx.rotate_every
        if store.previous_valid_until is not None and next_rotation < store.previous_valid_until:
            next_rotation = store.previous_valid_until  # it waits for the grace to end
        wake.append(next_rotation)
    if store.previous_valid_until is not None:
        wake.append(store.previous_valid_until)
    max_age = obs.policy.policy.max_key_age if (
        obs.policy is not None and obs.policy.policy is not None and ctx.problem is None) else None
    if current is not None and max_age is not None and current.created_at + max_age > obs.now:
        wake.append(current.created_at + max_age)  # when it turns non-compliant (KeyTooOld)

    restarts: tuple[RestartTarget, ...] = ()
    token = ""
    if current is not None and current.trigger != "initial" and store.pending is None:
        restarts = spec.restart_targets
        token = f"{current.version}-{fingerprint(current.key)[7:]}"

    status = _status_fields(obs, next_rotation)
    watch = _usage_watch(obs, ctx)
    if watch is not None and isinstance(status.get("previousKey"), dict):
        # PreviousKeyInUse once per grace: the status records that it was posted (the Event
        # follows the status write, so a crash in between loses it rather than doubles it).
        recorded = obs.status.get("previousKey")
        if watch.in_use_reported and isinstance(recorded, Mapping):
            status["previousKey"]["inUseReportedAt"] = recorded.get("inUseReportedAt")
        elif usage_grace.decide(obs.now, watch, obs.usage).report_in_use:
            status["previousKey"]["inUseReportedAt"] = format_time(obs.now)
            watch = replace(watch, in_use_reported=True)
    if queued is not None and store.previous_valid_until is not None:
        status["queuedRotation"] = {"trigger": queued[0],
                                    "requestedAt": format_time(queued[1]),
                                    "runsAt": format_time(store.previous_valid_until)}
    return Plan(
        step=None,
        readiness=_readiness(ctx),
        status=status,
        wake_at=min(wake) if wake else None,
        restarts=restarts,
        restart_token=token,
        usage_watch=watch,
    )


def _blocked(obs: Observation, reason: Reason, message: str,
             stalled: str | None = None) -> Plan:
    assert reason in BLOCKING_REASONS
    if obs.spec is None or obs.spec_error or obs.store_error:
        # The store was not consulted: keep what the user last saw about the key.
        status = {k: obs.status.get(k) for k in _status_fields(obs, None)}
        status["nextRotationTime"] = None
        status["queuedRotation"] = None
    else:
        status = _status_fields(obs, None)
    return Plan(step=None, readiness=Readiness(False, reason, message, stalled), status=status,
                wake_at=None, blocked=True)


def _status_fields(obs: Observation, next_rotation: datetime | None) -> dict[str, Any]:
    """status fields other than conditions/observedGeneration. Never key material."""
    store = obs.store
    status: dict[str, Any] = {
        "currentKey": None,
        "previousKey": None,
        "lastRotationTime": None,
        "nextRotationTime": format_time(next_rotation) if next_rotation else None,
        "storeRef": obs.store_location or None,
        "lastHandledRotate": store.handled.get("rotate") or obs.status.get("lastHandledRotate"),
        "lastHandledRevoke": store.handled.get("revoke") or obs.status.get("lastHandledRevoke"),
        "queuedRotation": None,
    }
    if not store.owned_by(obs.ref):
        return status
    if store.current is not None:
        status["currentKey"] = {
            "version": store.current.version,
            "fingerprint": fingerprint(store.current.key),
            "createdAt": format_time(store.current.created_at),
        }
        status["lastRotationTime"] = format_time(store.current.created_at)
    if store.previous is not None and store.previous_valid_until is not None:
        status["previousKey"] = {
            "version": store.previous.version,
            "fingerprint": fingerprint(store.previous.key),
            "validUntil": format_time(store.previous_valid_until),
        }
    return status


def _recorded(status: Mapping[str, Any], field_name: str) -> tuple[int, str] | None:
    """(version, fingerprint) of a key the status shows, if it shows a well-formed one."""
    entry = status.get(field_name)
    if not isinstance(entry, Mapping):
        return None
    version = entry.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    return version, str(entry.get("fingerprint", ""))


def _key_events(obs: Observation, after: Mapping[str, Any],
                grace: timedelta) -> tuple[Event, ...]:
    """The Events of a key's life, from what the status showed to what it shows now.

    Each is posted once its outcome is recorded, whoever did the steps and however many
    attempts they took, so none is lost to a crash or an unanswered request, and
    re-planning the same state posts nothing.
    """
    store = obs.store
    current = store.current
    if current is None or not store.owned_by(obs.ref) or obs.spec is None:
        return ()
    before = obs.status
    was_current = _recorded(before, "currentKey")
    # Versions can repeat across stores after a store move: a key is told by its fingerprint.
    valid = {fingerprint(d.key) for d in (store.current, store.previous, store.pending) if d}
    gone = [key for key in (_recorded(before, "previousKey"), was_current)
            if key is not None and key[1] not in valid]
    events: list[Event] = []
    fp = fingerprint(current.key)
    rotated = was_current is not None and was_current != (current.version, fp)
    if current.trigger == "revoke" and rotated:
        if store.previous is None:  # announced once every old version is gone
            names = ", ".join(f"{v} ({f})" for v, f in sorted(gone))
            events.append(Event(
                "Normal", Reason.REVOKED,
                f"key version{'s' if len(gone) > 1 else ''} {names or '(unknown)'} revoked at "
                f"once; key version {current.version} ({fp}) is current"))
        return tuple(events)
    was_previous = before.get("previousKey")
    promised = None
    if isinstance(was_previous, Mapping):
        with contextlib.suppress(ValueError):
            promised = parse_time(str(was_previous.get("validUntil")))
    for version, old_fp in sorted(gone):
        if promised is not None and obs.now < promised and _recorded(
                before, "previousKey") == (version, old_fp):
            events.append(_ended_early_event(obs, version, old_fp, promised))
            continue
        events.append(Event("Normal", Reason.GRACE_EXPIRED,
                            f"previous key version {version} ({old_fp}) revoked after its "
                            "grace period"))
    if was_current is None and current.trigger == "initial":
        events.append(Event("Normal", Reason.PROVISIONED,
                            f"key version {current.version} ({fp}) provisioned in "
                            f"{obs.store_location}"))
    elif rotated and store.previous is not None and store.previous_valid_until is not None:
        events.append(Event(
            "Normal", Reason.ROTATED,
            f"rotated ({current.trigger}) to key version {current.version} ({fp}); version "
            f"{store.previous.version} stays valid for {format_duration(grace)} (until "
            f"{format_time(store.previous_valid_until)})"))
    elif rotated and was_current is not None:
        # The rotation and the end of its grace reach the status in one write (a short grace
        # and a status write that had to wait): the rotation is still announced, before the
        # end of the grace it started.
        events.insert(0, Event(
            "Normal", Reason.ROTATED,
            f"rotated ({current.trigger}) to key version {current.version} ({fp}); the grace "
            f"of version {was_current[0]} ({was_current[1]}) has already ended"))
    now_previous = after.get("previousKey")
    if (isinstance(now_previous, Mapping) and now_previous.get("inUseReportedAt")
            and not (isinstance(was_previous, Mapping)
                     and was_previous.get("version") == now_previous.get("version")
                     and was_previous.get("inUseReportedAt"))):
        usage = obs.usage
        count = usage.previous_verifications if usage is not None else 0
        window = format_duration(usage.window) if usage is not None else "?"
        events.append(Event(
            "Warning", Reason.PREVIOUS_KEY_IN_USE,
            f"previous key version {now_previous.get('version')} "
            f"({now_previous.get('fingerprint')}) was verified {count} times in the last "
            f"{window} and its grace ends at {now_previous.get('validUntil')}; it is revoked "
            "then all the same: move its consumers to the current key"))
    queued = after.get("queuedRotation")
    was_queued = before.get("queuedRotation")
    if isinstance(queued, Mapping) and not (
            isinstance(was_queued, Mapping)
            and (was_queued.get("trigger"), was_queued.get("runsAt"))
            == (queued.get("trigger"), queued.get("runsAt"))):
        waiting = store.previous.version if store.previous is not None else "?"
        events.append(Event(
            "Normal", Reason.ROTATION_QUEUED,
            f"a {queued.get('trigger')} rotation waits for the grace of key version {waiting} "
            f"to end; it runs at {queued.get('runsAt')}"))
    return tuple(events)


def _ended_early_event(obs: Observation, version: int, old_fp: str,
                       promised: datetime) -> Event:
    """GraceEndedEarly with the figures that proved the key unused (when still known: after
    a restart between the two halves of the expire they may be gone)."""
    left = format_duration(max(promised - obs.now, timedelta(seconds=0)))
    usage = obs.usage
    if usage is not None and usage.previous_fingerprint == old_fp:
        figures = (f"no consumer verified it for {format_duration(usage.unused_for)}, while "
                   f"the current key {usage.current_fingerprint} was verified "
                   f"{usage.current_verifications} times in the last "
                   f"{format_duration(usage.window)}")
    else:
        figures = "its consumers had stopped verifying it"
    return Event("Normal", Reason.GRACE_ENDED_EARLY,
                 f"previous key version {version} ({old_fp}) revoked {left} before its grace "
                 f"end: {figures}")


def advance(obs: Observation, step: Step, written: VersionDocument | None = None) -> Observation:
    """The observation after `step` succeeded (for a create, `written` is what the store
    returned: the new version, or the one that already existed). The store transitions
    are the backends' own (`stores.base`)."""
    if isinstance(step, Promote | PromoteRevoking | Revoke | RetireStore) and step.store:
        return _advance_elsewhere(obs, step)
    store = obs.store
    where = obs.store_location
    if isinstance(step, RetireStore):
        return replace(obs, store=StoreState())
    if isinstance(step, CreateInitial):
        assert written is not None
        store = with_initial(store, obs.ref, written) if store.current is None else store
    elif isinstance(step, CreatePending):
        assert written is not None
        store = with_pending(store, obs.ref, written)
    elif isinstance(step, Promote):
        store = promoted(store, step.version, step.previous_valid_until, where)
    elif isinstance(step, PromoteRevoking):
        if store.pending is not None and store.pending.version == step.version:
            store = promoted_revoking(store, step.version, where)
    elif isinstance(step, Revoke):
        store = without(store, step.version)
    elif isinstance(step, DeleteSecret):
        return replace(obs, stale_secrets=tuple(n for n in obs.stale_secrets if n != step.name))
    else:
        secret = SecretView(
            exists=True,
            owner_uid=obs.ref.uid,
            managed=True,
            data=dict(step.data),
            labels=dict(step.labels),
            annotations=dict(step.annotations),
        )
        return replace(obs, secret=secret)
    return replace(obs, store=store)


def _advance_elsewhere(obs: Observation, step: Promote | PromoteRevoking | Revoke | RetireStore,
                       ) -> Observation:
    """The observation after a step in another store than spec.store's (a store move)."""
    entries = []
    for entry in obs.elsewhere:
        if entry.name != step.store:
            entries.append(entry)
        elif isinstance(step, Promote):
            entries.append(replace(entry, state=promoted(
                entry.state, step.version, step.previous_valid_until, entry.location)))
        elif isinstance(step, PromoteRevoking):
            entries.append(replace(entry, state=promoted_revoking(
                entry.state, step.version, entry.location)))
        elif isinstance(step, Revoke):
            entries.append(replace(entry, state=without(entry.state, step.version)))
    return replace(obs, elsewhere=tuple(entries))
