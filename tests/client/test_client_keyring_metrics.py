"""KeyRing counts what it verifies by fingerprint, never by key, only when asked to."""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from apikey_operator.client import KeyRing
from apikey_operator.keys import fingerprint
from apikey_operator.testing.kubelet import SecretVolume

from .helpers import FakeClock

pytestmark = pytest.mark.unit

OLD = "bill_oldMetricsTestKeyNotReal0000000000000000001"
NEW = "bill_newMetricsTestKeyNotReal0000000000000000002"
METRIC = "apikey_keyring_verifications_total"


def count(registry: CollectorRegistry, **labels: str) -> float | None:
    return registry.get_sample_value(METRIC, labels)


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    volume = SecretVolume(tmp_path / "keys")
    volume.write({"api-key": NEW, "api-key-previous": OLD})
    return volume


def test_verifications_are_counted_by_fingerprint_role_and_result(volume: SecretVolume) -> None:
    registry = CollectorRegistry()
    ring = KeyRing.from_directory(volume.directory, metrics=registry, clock=FakeClock())
    assert ring.verify(NEW) and ring.verify(NEW) and ring.verify(OLD)
    assert not ring.verify("bill_someoneElsesKey") and not ring.verify(None)
    assert count(registry, fingerprint=fingerprint(NEW), role="current", result="accepted") == 2
    assert count(registry, fingerprint=fingerprint(OLD), role="previous", result="accepted") == 1
    assert count(registry, fingerprint="", role="", result="rejected") == 2


def test_every_loaded_key_is_exported_at_zero_before_any_request(volume: SecretVolume) -> None:
    # A series that exists from the start tells "held and unused" from "not reporting".
    registry = CollectorRegistry()
    KeyRing.from_directory(volume.directory, metrics=registry, clock=FakeClock())
    assert count(registry, fingerprint=fingerprint(NEW), role="current", result="accepted") == 0
    assert count(registry, fingerprint=fingerprint(OLD), role="previous", result="accepted") == 0


def test_a_reloaded_key_is_counted_under_its_new_fingerprint(volume: SecretVolume) -> None:
    registry = CollectorRegistry()
    clock = FakeClock()
    ring = KeyRing.from_directory(volume.directory, metrics=registry, clock=clock)
    newest = "bill_newestMetricsTestKeyNotReal00000000000003"
    volume.write({"api-key": newest, "api-key-previous": NEW})
    assert ring.verify(newest)  # a miss looks at the volume again at once
    assert count(registry, fingerprint=fingerprint(newest), role="current",
                 result="accepted") == 1
    assert count(registry, fingerprint=fingerprint(NEW), role="previous", result="accepted") == 0


def test_rings_sharing_a_registry_share_one_counter(volume: SecretVolume) -> None:
    registry = CollectorRegistry()
    first = KeyRing.from_directory(volume.directory, metrics=registry, clock=FakeClock())
    second = KeyRing.from_directory(volume.directory, metrics=registry, clock=FakeClock())
    assert first.verify(NEW) and second.verify(NEW)
    assert count(registry, fingerprint=fingerprint(NEW), role="current", result="accepted") == 2


def test_no_key_appears_in_the_exported_metrics(volume: SecretVolume) -> None:
    registry = CollectorRegistry()
    ring = KeyRing.from_directory(volume.directory, metrics=registry, clock=FakeClock())
    ring.verify(NEW)
    ring.verify(OLD)
    ring.verify("bill_aNearMissThatCouldBeSomeonesKey")
    text = generate_latest(registry).decode()
    for secret in (NEW, OLD, "bill_aNearMissThatCouldBeSomeonesKey"):
        assert secret not in text


def test_without_metrics_nothing_is_registered(volume: SecretVolume,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import prometheus_client

    registry = CollectorRegistry()
    monkeypatch.setattr(prometheus_client, "REGISTRY", registry)
    ring = KeyRing.from_directory(volume.directory, clock=FakeClock())
    assert ring.verify(NEW)
    assert count(registry, fingerprint=fingerprint(NEW), role="current",
                 result="accepted") is None


def test_counting_keeps_both_comparisons_on_every_verification(
    volume: SecretVolume, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whichever key matches (or none), both digests are compared: the count comes after.
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    ring = KeyRing.from_directory(volume.directory, metrics=CollectorRegistry(),
                                  clock=FakeClock())
    monkeypatch.setattr(hmac, "compare_digest", counting)
    for presented in (NEW, OLD):
        calls.clear()
        assert ring.verify(presented)
        assert len(calls) == 2


def test_a_new_registry_gets_its_own_counter_after_an_old_one_is_collected(
    volume: SecretVolume
) -> None:
    # Counters were cached by id(registry): a registry created after another was collected
    # often gets the same id, and then a counter registered in the dead one (no series).
    for _ in range(50):
        registry = CollectorRegistry()
        KeyRing.from_directory(volume.directory, metrics=registry, clock=FakeClock())
        assert count(registry, fingerprint=fingerprint(NEW), role="current",
                     result="accepted") == 0
        del registry
