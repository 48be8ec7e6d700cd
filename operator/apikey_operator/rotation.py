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

A new rotation never starts while an old previous key is still valid: that key
is expired early first, so the store holds at most current + previous + pending.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from apikey_operator.conditions import Condition
from apikey_operator.durations import format_duration
from apikey_operator.keys import KeyFormat, fingerprint
from apikey_operator.spec import (
    DEFAULT_GRACE,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    ApiKeySpec,
    RestartTarget,
    RotationPolicy,
)
from apikey_operator.stores.base import KeyRef, StoreState, VersionDocument, format_time

EventType = Literal["Normal", "Warning"]
Trigger = Literal["initial", "schedule", "rotate", "revoke", "format"]

VERSION_ANNOTATION = "apikeys.dev/version"
FINGERPRINT_ANNOTATION = "apikeys.dev/fingerprint"
ROTATED_AT_ANNOTATION = "apikeys.dev/rotated-at"
SCOPES_ANNOTATION = "apikeys.dev/scopes"
RESTART_ANNOTATION_PREFIX = "apikeys.dev/restart-"
MAX_TOKEN_LENGTH = 63
# Warning reasons: a transition of Ready into one of these posts a Warning Event.
WARNING_REASONS = frozenset(
    {"InvalidSpec", "SecretConflict", "StoreConflict", "StoreUnavailable", "RotationFailed",
     "PolicyNotAllowed"}
)


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
    secret: SecretView = field(default_factory=SecretView)
    policy: PolicyView | None = None
    namespace_labels: Mapping[str, str] | None = None
    rotate_request: str | None = None
    revoke_request: str | None = None
    status: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True)
class CreatePending:
    """Step 1: the executor generates a key in `key_format` and writes it as pending."""

    version: int
    created_at: datetime
    key_format: KeyFormat
    scopes: tuple[str, ...]
    handles: Mapping[str, str]
    trigger: Trigger

    def document(self, key: str) -> VersionDocument:
        return VersionDocument(
            version=self.version,
            key=key,
            created_at=self.created_at,
            key_format=self.key_format,
            scopes=self.scopes,
            handles=dict(self.handles, trigger=self.trigger),
        )


@dataclass(frozen=True)
class WriteSecret:
    """Step 2 (and drift repair, and the first half of expire): make the Secret exactly this."""

    name: str
    data: Mapping[str, str] = field(repr=False)
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    purpose: Literal["project", "restore", "expire"]
    event: Event | None = None


@dataclass(frozen=True)
class Promote:
    """Step 3."""

    version: int
    previous_valid_until: datetime
    event: Event | None


@dataclass(frozen=True)
class Revoke:
    """Step 4 (and emergency revoke): destroy `version` in the store."""

    version: int
    event: Event | None = None


Step = CreatePending | WriteSecret | Promote | Revoke


@dataclass(frozen=True)
class Plan:
    step: Step | None
    conditions: tuple[Condition, ...]
    status: Mapping[str, Any]
    wake_at: datetime | None
    # Roll these workloads to this token (idempotent: the same token never restarts twice).
    restarts: tuple[RestartTarget, ...] = ()
    restart_token: str = ""
    # Set when the plan is blocked by a problem a human must fix (no retries help).
    blocked: bool = False


def _trigger_of(doc: VersionDocument | None) -> str:
    return doc.handles.get("trigger", "") if doc else ""


def plan(obs: Observation) -> Plan:
    """The next step for one ApiKey, with its conditions, status and wake-up time."""
    spec = obs.spec
    if spec is None or obs.spec_error:
        return _blocked(obs, Condition("Stalled", True, "InvalidSpec", obs.spec_error or ""),
                        "InvalidSpec", obs.spec_error or "invalid spec")
    if obs.store_error:
        return _blocked(obs, Condition("Stalled", True, "InvalidSpec", obs.store_error),
                        "InvalidSpec", obs.store_error)
    store = obs.store
    if not store.owned_by(obs.ref):
        message = (
            f"the store entry {obs.store_location} was not created for this ApiKey; "
            "it is left untouched"
        )
        return _blocked(obs, None, "StoreConflict", message)
    secret = obs.secret
    if secret.exists and (secret.owner_uid != obs.ref.uid or not secret.managed):
        message = (
            f"Secret {spec.secret_name} exists and is not owned by this ApiKey; "
            "it is left untouched"
        )
        return _blocked(obs, None, "SecretConflict", message)

    policy_problem = _policy_problem(obs)
    grace, rotate_every = _grace_and_period(obs)
    now = obs.now

    # An interrupted rotation always finishes first: the pending key may already be in use.
    if store.pending is not None:
        pending = store.pending
        emergency = _trigger_of(pending) == "revoke"
        desired = _desired_secret(obs, spec, pending, None if emergency else store.current)
        if desired is not None:
            return _with_step(obs, spec, desired, policy_problem, rotate_every)
        until = now if emergency else now + grace
        return _with_step(obs, spec, Promote(pending.version, until, _promote_event(obs, pending,
                                                                                     grace)),
                          policy_problem, rotate_every)

    # The grace of the previous key is over: out of the Secret first, then out of the store.
    previous = store.previous
    if previous is not None and store.previous_valid_until is not None \
            and store.previous_valid_until <= now:
        step = _expire(obs, spec, previous, early=False)
        return _with_step(obs, spec, step, policy_problem, rotate_every)

    if store.current is None:
        if policy_problem is not None and policy_problem[0] != "PolicyNotFound":
            return _finish(obs, spec, policy_problem, rotate_every)
        handles = {k: v for k, v in (("rotate", obs.rotate_request),
                                     ("revoke", obs.revoke_request)) if v}
        return _with_step(obs, spec, _create(obs, spec, handles, "initial"), policy_problem,
                          rotate_every)

    trigger, handles = _rotation_trigger(obs, spec, policy_problem, rotate_every)
    if trigger is not None and previous is not None:
        # The key still in its grace goes before the next rotation starts.
        return _with_step(obs, spec, _expire(obs, spec, previous, early=True),
                          policy_problem, rotate_every)
    desired = _desired_secret(obs, spec, store.current, previous)
    if desired is not None:
        return _with_step(obs, spec, desired, policy_problem, rotate_every)
    if trigger is not None:
        return _with_step(obs, spec, _create(obs, spec, handles, trigger), policy_problem,
                          rotate_every)
    return _finish(obs, spec, policy_problem, rotate_every)


def _unhandled(obs: Observation, kind: str, token: str | None) -> bool:
    if not token:
        return False
    handled = obs.store.handled.get(kind)
    return token != handled


def _rotation_trigger(
    obs: Observation, spec: ApiKeySpec, policy_problem: tuple[str, str] | None,
    rotate_every: timedelta | None,
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
        "PolicyNotAllowed", "InvalidSpec")
    if blocked_by_policy:
        return None, {}
    if "rotate" in outstanding:
        return "rotate", outstanding
    if current.key_format != spec.key_format:
        return "format", {}
    if rotate_every is not None and obs.now >= current.created_at + rotate_every:
        return "schedule", {}
    return None, {}


def _create(obs: Observation, spec: ApiKeySpec, handles: Mapping[str, str],
            trigger: Trigger) -> CreatePending:
    return CreatePending(
        version=obs.store.next_version(),
        created_at=obs.now,
        key_format=spec.key_format,
        scopes=spec.scopes,
        handles=dict(handles),
        trigger=trigger,
    )


def _expire(obs: Observation, spec: ApiKeySpec, previous: VersionDocument, *,
            early: bool) -> Step:
    """Remove the previous key from the Secret, or, once it is gone there, revoke it."""
    current = obs.store.current
    assert current is not None
    if obs.secret.exists and spec.previous_key in obs.secret.data:
        return _secret_step(obs, spec, current, None, "expire")
    event = None
    if _trigger_of(current) == "revoke":
        event = Event(
            "Normal", "Revoked",
            f"key version {previous.version} ({fingerprint(previous.key)}) revoked at once; "
            f"key version {current.version} ({fingerprint(current.key)}) is current",
        )
    elif not early:
        event = Event("Normal", "GraceExpired",
                      f"previous key version {previous.version} ({fingerprint(previous.key)}) "
                      "revoked after its grace period")
    return Revoke(previous.version, event)


def _promote_event(obs: Observation, pending: VersionDocument,
                   grace: timedelta) -> Event | None:
    trigger = _trigger_of(pending)
    fp = fingerprint(pending.key)
    old = obs.store.current
    if old is None:
        return Event("Normal", "Provisioned",
                     f"key version {pending.version} ({fp}) provisioned in {obs.store_location}")
    if trigger == "revoke":
        return None  # "Revoked" is posted once the old key is gone from the store too
    return Event("Normal", "Rotated",
                 f"rotated ({trigger}) to key version {pending.version} ({fp}); version "
                 f"{old.version} stays valid for {format_duration(grace)}")


def _desired_secret(obs: Observation, spec: ApiKeySpec, current: VersionDocument,
                    previous: VersionDocument | None) -> WriteSecret | None:
    """A WriteSecret if the Secret differs from what it should hold, else None."""
    purpose: Literal["project", "restore"] = "project"
    step = _secret_step(obs, spec, current, previous, purpose)
    secret = obs.secret
    if secret.exists and dict(secret.data) == dict(step.data) and all(
        secret.labels.get(k) == v for k, v in step.labels.items()
    ) and all(secret.annotations.get(k) == v for k, v in step.annotations.items()):
        return None
    # The Secret matches neither the old nor the new projection: someone deleted or edited it.
    projected_before = obs.status.get("currentKey", {}) if isinstance(
        obs.status.get("currentKey"), Mapping) else {}
    if projected_before.get("version") == current.version and obs.store.pending is None:
        return replace(step, purpose="restore", event=Event(
            "Normal", "SecretRestored",
            f"Secret {spec.secret_name} was deleted or edited; restored key version "
            f"{current.version} from the store (no rotation)",
        ))
    return step


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


def _policy_problem(obs: Observation) -> tuple[str, str] | None:
    """(reason, message) when the referenced policy cannot schedule this key."""
    view = obs.policy
    if view is None:
        return None
    if not view.found:
        return ("PolicyNotFound",
                f"RotationPolicy {view.name} not found: the key stays valid but is not scheduled")
    if view.error or view.policy is None:
        return ("InvalidSpec", f"RotationPolicy {view.name}: {view.error}")
    selector = view.policy.namespace_selector
    if selector is not None and not selector.admits(obs.namespace_labels or {}):
        return ("PolicyNotAllowed",
                f"RotationPolicy {view.name} does not admit namespace {obs.ref.namespace}; "
                "the current key is kept and not rotated")
    return None


def _grace_and_period(obs: Observation) -> tuple[timedelta, timedelta | None]:
    view = obs.policy
    if view is not None and view.policy is not None and _policy_problem(obs) is None:
        return view.policy.grace_period, view.policy.rotate_every
    return DEFAULT_GRACE, None


def _with_step(obs: Observation, spec: ApiKeySpec, step: Step,
               policy_problem: tuple[str, str] | None,
               rotate_every: timedelta | None) -> Plan:
    base = _finish(obs, spec, policy_problem, rotate_every)
    return replace(base, step=step, restarts=(), restart_token="")


def _finish(obs: Observation, spec: ApiKeySpec, policy_problem: tuple[str, str] | None,
            rotate_every: timedelta | None) -> Plan:
    store = obs.store
    current = store.current
    conditions: list[Condition] = []
    if current is None or store.pending is not None:
        if policy_problem is not None and policy_problem[0] in ("PolicyNotAllowed", "InvalidSpec"):
            ready = Condition("Ready", False, policy_problem[0], policy_problem[1])
        else:
            ready = Condition("Ready", False, "Provisioning", "a key version is being written")
    elif policy_problem is not None and policy_problem[0] in ("PolicyNotAllowed", "InvalidSpec"):
        ready = Condition("Ready", False, policy_problem[0], policy_problem[1])
    else:
        ready = Condition("Ready", True, "Provisioned",
                          f"key version {current.version} is current in {obs.store_location}")
    conditions.append(ready)
    if policy_problem is not None and policy_problem[0] == "InvalidSpec":
        conditions.append(Condition("Stalled", True, "InvalidSpec", policy_problem[1]))
    if policy_problem is not None and policy_problem[0] == "PolicyNotFound":
        conditions.append(Condition("Scheduled", False, "PolicyNotFound", policy_problem[1]))
    elif obs.policy is None:
        conditions.append(Condition("Scheduled", False, "NoPolicy",
                                    "no rotationPolicyRef: the key rotates only on request"))
    elif policy_problem is None:
        conditions.append(Condition("Scheduled", True, "PolicyApplied",
                                    f"rotates every {format_duration(rotate_every or timedelta())}"
                                    f" under RotationPolicy {obs.policy.name}"))

    wake: list[datetime] = []
    next_rotation = None
    if current is not None and rotate_every is not None:
        next_rotation = current.created_at + rotate_every
        wake.append(next_rotation)
    if store.previous_valid_until is not None:
        wake.append(store.previous_valid_until)

    restarts: tuple[RestartTarget, ...] = ()
    token = ""
    if current is not None and _trigger_of(current) != "initial" and store.pending is None:
        restarts = spec.restart_targets
        token = f"{current.version}-{fingerprint(current.key)[7:]}"

    return Plan(
        step=None,
        conditions=tuple(conditions),
        status=_status_fields(obs, next_rotation),
        wake_at=min(wake) if wake else None,
        restarts=restarts,
        restart_token=token,
    )


def _blocked(obs: Observation, extra: Condition | None, reason: str, message: str) -> Plan:
    conditions = [Condition("Ready", False, reason, message)]
    if extra is not None:
        conditions.append(extra)
    if obs.spec is None or obs.spec_error or obs.store_error:
        # The store was not consulted: keep what the user last saw about the key.
        status = {k: obs.status.get(k) for k in _status_fields(obs, None)}
        status["nextRotationTime"] = None
    else:
        status = _status_fields(obs, None)
    return Plan(step=None, conditions=tuple(conditions), status=status, wake_at=None,
                blocked=True)


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


def advance(obs: Observation, step: Step, written: VersionDocument | None = None) -> Observation:
    """The observation after `step` succeeded (for CreatePending, `written` is what the store
    returned: the new pending version, or the one that already existed)."""
    store = obs.store
    if isinstance(step, CreatePending):
        assert written is not None
        store = replace(store, exists=True, owner_uid=obs.ref.uid, pending=written)
    elif isinstance(step, Promote):
        pending = store.pending
        if pending is not None and pending.version == step.version:
            handled = dict(store.handled)
            handled.update({k: v for k, v in pending.handles.items() if k in ("rotate", "revoke")})
            had_current = store.current is not None
            store = replace(
                store,
                previous=store.current,
                previous_valid_until=step.previous_valid_until if had_current else None,
                current=pending,
                pending=None,
                handled=handled,
            )
    elif isinstance(step, Revoke):
        if store.previous is not None and store.previous.version == step.version:
            store = replace(store, previous=None, previous_valid_until=None)
        elif store.pending is not None and store.pending.version == step.version:
            store = replace(store, pending=None)
        elif store.current is not None and store.current.version == step.version:
            store = replace(store, current=None)
    elif isinstance(step, WriteSecret):
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
