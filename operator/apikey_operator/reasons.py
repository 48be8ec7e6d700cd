"""Every reason the operator writes into a condition or an Event: one enum, no loose strings.

A `StrEnum`, so a reason compares equal to the string a status or an Event already holds
and serialises as that string.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Ready=True, and the Normal Events of a key's life.
    PROVISIONED = "Provisioned"
    ROTATED = "Rotated"
    ROTATION_QUEUED = "RotationQueued"
    GRACE_EXPIRED = "GraceExpired"
    GRACE_ENDED_EARLY = "GraceEndedEarly"
    REVOKED = "Revoked"
    SECRET_RESTORED = "SecretRestored"
    SECRET_REMOVED = "SecretRemoved"
    RESTART_TRIGGERED = "RestartTriggered"
    # Ready=False while a version is being written (not a problem).
    PROVISIONING = "Provisioning"
    # Problems: Ready=False (or Scheduled=False), each with a Warning Event on transition.
    INVALID_SPEC = "InvalidSpec"
    SECRET_CONFLICT = "SecretConflict"
    STORE_CONFLICT = "StoreConflict"
    STORE_UNAVAILABLE = "StoreUnavailable"
    ROTATION_FAILED = "RotationFailed"
    POLICY_NOT_ALLOWED = "PolicyNotAllowed"
    POLICY_NOT_FOUND = "PolicyNotFound"
    KEY_TOO_OLD = "KeyTooOld"
    PREVIOUS_KEY_IN_USE = "PreviousKeyInUse"
    STATUS_UPDATE_FAILED = "StatusUpdateFailed"
    RESTART_FAILED = "RestartFailed"
    RESTART_TARGET_NOT_FOUND = "RestartTargetNotFound"
    STORE_CLEANUP_INCOMPLETE = "StoreCleanupIncomplete"
    # Scheduled condition.
    POLICY_APPLIED = "PolicyApplied"
    NO_POLICY = "NoPolicy"
    # RotationPolicy Ready condition.
    VALID = "Valid"


# A transition of Ready (or Scheduled) into one of these posts a Warning Event.
WARNING_REASONS = frozenset({
    Reason.INVALID_SPEC, Reason.SECRET_CONFLICT, Reason.STORE_CONFLICT,
    Reason.STORE_UNAVAILABLE, Reason.ROTATION_FAILED, Reason.POLICY_NOT_ALLOWED,
    Reason.POLICY_NOT_FOUND,
})
# Problems that no retry fixes: a human must change something first.
BLOCKING_REASONS = frozenset({
    Reason.INVALID_SPEC, Reason.SECRET_CONFLICT, Reason.STORE_CONFLICT,
})
