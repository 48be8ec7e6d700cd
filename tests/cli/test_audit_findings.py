"""The pure finding rules, one ApiKey shape per case."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from apikey_operator.audit import POLICY_MISSING, fails, findings_for, inventory_item

pytestmark = pytest.mark.unit
NOW = datetime(2026, 3, 1, tzinfo=UTC)
POLICY = {"metadata": {"name": "p"}, "spec": {"rotateEvery": "30d", "maxKeyAge": "45d"}}


def key(ready: str | None = "True", reason: str = "Provisioned",
        created: str = "2026-02-20T00:00:00Z", policy: str | None = "p",
        stalled: bool = False) -> dict[str, Any]:
    conditions = []
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready, "reason": reason, "message": "m"})
    if stalled:
        conditions.append({"type": "Stalled", "status": "True", "reason": "InvalidSpec",
                           "message": "spec.x is bad"})
    spec = {"rotationPolicyRef": {"name": policy}} if policy else {}
    return {"metadata": {"namespace": "ns", "name": "k"}, "spec": spec,
            "status": {"conditions": conditions,
                       "currentKey": {"version": 1, "createdAt": created}}}


@pytest.mark.parametrize(("body", "policy", "codes"), [
    (key(), POLICY, []),
    (key(policy=None), None, ["warning:NoPolicy"]),
    (key(created="2026-01-01T00:00:00Z"), POLICY, ["error:KeyTooOld"]),
    (key(created="2026-01-01T00:00:00Z"), {"spec": {"rotateEvery": "30d"}}, []),
    (key(), POLICY_MISSING, ["error:PolicyNotFound"]),
    (key(ready="False", reason="StoreUnavailable"), POLICY, ["error:StoreUnavailable"]),
    (key(ready="False", reason="SecretConflict"), POLICY, ["error:NotReady"]),
    (key(ready="False", reason="InvalidSpec", stalled=True), POLICY, ["error:Stalled"]),
    (key(ready=None), POLICY, ["warning:NotReady"]),
], ids=["compliant", "zombie key", "older than maxKeyAge", "no maxKeyAge",
        "policy deleted", "store down", "not ready", "stalled", "not provisioned"])
def test_findings(body: dict[str, Any], policy: Any, codes: list[str]) -> None:
    assert [f"{f.severity}:{f.code}" for f in findings_for(body, policy, NOW)] == codes


def test_fail_on_thresholds() -> None:
    warning = [inventory_item(key(policy=None), None, None, NOW)]
    error = [inventory_item(key(), POLICY_MISSING, {"apikeys.dev/owner": "team"}, NOW)]
    assert error[0]["owner"] == "team"
    assert (fails(warning, "warning"), fails(warning, "error"), fails(warning, None)) == (
        True, False, False)
    assert (fails(error, "warning"), fails(error, "error")) == (True, True)
    assert not fails([inventory_item(key(), POLICY, None, NOW)], "warning")
