"""The two metrics the command line's figures belong to, ready for the operator to record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from apikey_operator import metrics

pytestmark = pytest.mark.unit


def _value(name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels or {})


def test_revocation_duration_is_measured_from_the_annotations_timestamp() -> None:
    before = _value("apikey_revocation_duration_seconds_count") or 0.0
    at = datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    metrics.observe_revocation("2026-01-02T03:04:05.250000Z", at + timedelta(seconds=1.5))
    metrics.observe_revocation("now", at)  # a hand-written value: no figure
    assert _value("apikey_revocation_duration_seconds_count") == before + 1
    assert _value("apikey_revocation_duration_seconds_bucket", {"le": "2.0"}) >= 1  # type: ignore[operator]


def test_policy_findings_are_exactly_the_current_codes() -> None:
    metrics.set_findings("ns-f", "key", ["NoPolicy", "KeyTooOld"])
    metrics.set_findings("ns-f", "key", ["KeyTooOld"])
    assert _value("apikey_policy_findings", {"namespace": "ns-f", "name": "key",
                                             "code": "KeyTooOld"}) == 1
    assert _value("apikey_policy_findings", {"namespace": "ns-f", "name": "key",
                                             "code": "NoPolicy"}) is None
    metrics.forget_key("ns-f", "key")
    assert _value("apikey_policy_findings", {"namespace": "ns-f", "name": "key",
                                             "code": "KeyTooOld"}) is None
