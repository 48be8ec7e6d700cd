"""Status (pure): the conditions a plan means, the status a failure leaves, and the Warning
Events a change of conditions posts. One builder keeps lastTransitionTime stable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apikey_operator.reasons import WARNING_REASONS, Reason
from apikey_operator.rotation import Event, Plan
from apikey_operator.stores.base import format_time


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: Reason | str
    message: str


def conditions_for(plan: Plan) -> tuple[Condition, ...]:
    """Ready (always), Stalled (an invalid spec), Scheduled (with a spec) and StoreCleanup
    (an entry left in a store that is no longer configured) for a plan."""
    readiness = plan.readiness
    result = [Condition("Ready", readiness.ready, readiness.reason, readiness.message)]
    if readiness.stalled is not None:
        result.append(Condition("Stalled", True, Reason.INVALID_SPEC, readiness.stalled))
    if readiness.scheduled is not None:
        result.append(Condition("Scheduled", *readiness.scheduled))
    if readiness.cleanup is not None:
        result.append(Condition("StoreCleanup", False, Reason.STORE_CLEANUP_INCOMPLETE,
                                readiness.cleanup))
    return tuple(result)


def status_for(plan: Plan, recorded: Mapping[str, Any], generation: int,
               now: datetime) -> dict[str, Any]:
    """The whole status a plan leaves (the caller adds its own bookkeeping fields)."""
    status = dict(plan.status)
    status["conditions"] = build_conditions(conditions_for(plan), recorded.get("conditions"),
                                            generation, now)
    status["observedGeneration"] = generation
    return status


def failure_status(recorded: Mapping[str, Any], reason: Reason, message: str,
                   generation: int, now: datetime, store_ref: str = "") -> dict[str, Any]:
    """The status after a step failed: Ready=False with `reason`, all else as recorded (the
    failed step changed nothing the status describes)."""
    kept = [Condition(str(c["type"]), c.get("status") == "True", str(c.get("reason", "")),
                      str(c.get("message", "")))
            for c in _entries(recorded.get("conditions")) if c.get("type") not in (None, "Ready")]
    status = dict(recorded)
    status["conditions"] = build_conditions([Condition("Ready", False, reason, message), *kept],
                                            recorded.get("conditions"), generation, now)
    status["observedGeneration"] = generation
    if store_ref:
        status["storeRef"] = store_ref
    return status


def policy_status(error: str | None, summary: str, keys: int, recorded: Mapping[str, Any],
                  generation: int, now: datetime) -> dict[str, Any]:
    """A RotationPolicy's own status: Ready (InvalidSpec with the message when it cannot
    schedule anything) and how many ApiKeys reference it."""
    ready = (Condition("Ready", False, Reason.INVALID_SPEC, error) if error is not None
             else Condition("Ready", True, Reason.VALID, summary))
    return {"conditions": build_conditions([ready], recorded.get("conditions"), generation, now),
            "observedGeneration": generation, "keys": keys}


def condition_events(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[Event, ...]:
    """Warning Events for problems the conditions newly show (a changed reason or message
    counts as new; the same problem again posts nothing)."""
    old_ready = condition_of(before.get("conditions"), "Ready")
    ready = condition_of(after.get("conditions"), "Ready")
    events: list[Event] = []
    if ready.get("status") == "False" and ready.get("reason") in WARNING_REASONS and (
            (old_ready.get("reason"), old_ready.get("message"))
            != (ready.get("reason"), ready.get("message"))):
        events.append(Event("Warning", Reason(str(ready["reason"])),
                            str(ready.get("message", ""))))
    stalled = condition_of(after.get("conditions"), "Stalled")
    old_stalled = condition_of(before.get("conditions"), "Stalled")
    if stalled.get("status") == "True" and stalled.get("reason") == Reason.INVALID_SPEC \
            and old_stalled.get("message") != stalled.get("message") \
            and ready.get("reason") != Reason.INVALID_SPEC:
        events.append(Event("Warning", Reason.INVALID_SPEC, str(stalled.get("message", ""))))
    scheduled = condition_of(after.get("conditions"), "Scheduled")
    old_scheduled = condition_of(before.get("conditions"), "Scheduled")
    if scheduled.get("status") == "False" and scheduled.get("reason") in WARNING_REASONS and (
            (old_scheduled.get("reason"), old_scheduled.get("message"))
            != (scheduled.get("reason"), scheduled.get("message"))):
        events.append(Event("Warning", Reason(str(scheduled["reason"])),
                            str(scheduled.get("message", ""))))
    cleanup = condition_of(after.get("conditions"), "StoreCleanup")
    old_cleanup = condition_of(before.get("conditions"), "StoreCleanup")
    if cleanup.get("status") == "False" and old_cleanup.get("message") != cleanup.get("message"):
        events.append(Event("Warning", Reason.STORE_CLEANUP_INCOMPLETE,
                            str(cleanup.get("message", ""))))
    return tuple(events)


def _entries(conditions: object) -> list[Mapping[str, Any]]:
    if not isinstance(conditions, Sequence) or isinstance(conditions, str):
        return []
    return [c for c in conditions if isinstance(c, Mapping)]


def build_conditions(
    wanted: Sequence[Condition],
    existing: Sequence[Mapping[str, Any]] | None,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The status.conditions list for `wanted`, in kstatus shape.

    lastTransitionTime is carried over from `existing` unless the condition's
    status flips, so repeated reconciles produce identical status (and no patch).
    """
    previous = {str(c.get("type")): c for c in _entries(existing) if c.get("type")}
    result = []
    for cond in wanted:
        status = "True" if cond.status else "False"
        old = previous.get(cond.type)
        if old is not None and old.get("status") == status and old.get("lastTransitionTime"):
            transition = str(old["lastTransitionTime"])
        else:
            transition = format_time(now)
        result.append(
            {
                "type": cond.type,
                "status": status,
                "reason": str(cond.reason),
                "message": cond.message,
                "lastTransitionTime": transition,
                "observedGeneration": generation,
            }
        )
    return result


def condition_of(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any]:
    """The condition of that type in a status.conditions list, or an empty mapping."""
    if not isinstance(conditions, Sequence) or isinstance(conditions, str):
        return {}
    for cond in conditions:
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return {}
