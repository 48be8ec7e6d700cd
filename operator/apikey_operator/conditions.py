"""Status conditions (pure): one builder that keeps lastTransitionTime stable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apikey_operator.stores.base import format_time


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


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
    entries = existing if isinstance(existing, Sequence) and not isinstance(existing, str) else []
    previous = {str(c.get("type")): c for c in entries if isinstance(c, Mapping) and c.get("type")}
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
                "reason": cond.reason,
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
