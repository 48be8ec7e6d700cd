"""The Argo CD health check (docs/argocd-health.lua) run in Lua 5.1 on every status shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

lua51 = pytest.importorskip("lupa.lua51", reason="lupa (Lua runtimes for Python) is not installed")

pytestmark = pytest.mark.unit

SCRIPT = (Path(__file__).resolve().parents[2] / "docs" / "argocd-health.lua").read_text(
    encoding="utf-8"
)
T = "2026-01-01T00:00:00Z"


def condition(kind: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T,
    }


def apikey(generation: int, status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "apikeys.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {"name": "billing-client", "namespace": "payments", "generation": generation},
        "spec": {"store": "kubernetes"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the script the way Argo CD does: a global `obj`, the chunk returns `hs`."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    result = runtime.execute(SCRIPT)
    return str(result["status"]), str(result["message"])


READY = condition("Ready", "True", "Provisioned", "key version 4 is current")
NOT_STALLED = condition("Stalled", "False", "Reconciled")

CASES = {
    "no status yet": (apikey(1, None), "Progressing"),
    "status without conditions": (apikey(1, {"observedGeneration": 1}), "Progressing"),
    "ready and current": (
        apikey(3, {"observedGeneration": 3, "conditions": [READY, NOT_STALLED]}),
        "Healthy",
    ),
    "ready for an older generation": (
        apikey(4, {"observedGeneration": 3, "conditions": [READY]}),
        "Progressing",
    ),
    "ready without observedGeneration": (apikey(2, {"conditions": [READY]}), "Progressing"),
    "stalled on an invalid spec": (
        apikey(
            2,
            {
                "observedGeneration": 2,
                "conditions": [
                    condition("Ready", "False", "InvalidSpec"),
                    condition("Stalled", "True", "InvalidSpec", "gracePeriod 40d >= rotateEvery"),
                ],
            },
        ),
        "Degraded",
    ),
    "stalled even while an old key is ready": (
        apikey(
            2, {"observedGeneration": 2, "conditions": [READY, condition("Stalled", "True", "X")]}
        ),
        "Degraded",
    ),
    "store unavailable is transient": (
        apikey(
            1,
            {
                "observedGeneration": 1,
                "conditions": [condition("Ready", "False", "StoreUnavailable", "timeout")],
            },
        ),
        "Progressing",
    ),
    "ready unknown while reconciling": (
        apikey(
            1, {"observedGeneration": 1, "conditions": [condition("Ready", "Unknown", "Pending")]}
        ),
        "Progressing",
    ),
}
for reason in ("SecretConflict", "StoreConflict", "PolicyNotAllowed", "RotationFailed"):
    CASES[f"ready false: {reason}"] = (
        apikey(1, {"observedGeneration": 1, "conditions": [condition("Ready", "False", reason)]}),
        "Degraded",
    )


@pytest.mark.parametrize("name", CASES)
def test_health_of_each_status_shape(name: str) -> None:
    obj, expected = CASES[name]
    status, message = health(obj)
    assert status == expected
    assert message


def test_messages_carry_the_reason_and_message() -> None:
    obj = apikey(
        1,
        {
            "observedGeneration": 1,
            "conditions": [
                condition("Ready", "False", "SecretConflict", "Secret billing-client exists")
            ],
        },
    )
    assert health(obj) == ("Degraded", "SecretConflict: Secret billing-client exists")
    healthy = apikey(3, {"observedGeneration": 3, "conditions": [READY]})
    assert health(healthy) == ("Healthy", "Provisioned: key version 4 is current")
    waiting = apikey(4, {"observedGeneration": 3, "conditions": [READY]})
    assert health(waiting) == ("Progressing", "Waiting for the operator to observe generation 4")
