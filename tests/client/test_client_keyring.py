"""KeyRing verification and reloading, and the header helper."""

from __future__ import annotations

import hmac
import logging
import threading
from pathlib import Path

import pytest

from apikey_operator.client import KeyRing, SourceUnavailable, key_from_headers
from apikey_operator.testing.kubelet import SecretVolume

from .helpers import FakeClock, library_log

pytestmark = pytest.mark.unit

OLD = "bill_oldUnitTestKeyNotReal000000000000000000000001"
NEW = "bill_newUnitTestKeyNotReal000000000000000000000002"
OTHER = "bill_otherUnitTestKeyNotReal00000000000000000000003"


@pytest.fixture
def volume(tmp_path: Path) -> SecretVolume:
    volume = SecretVolume(tmp_path / "keys")
    volume.write({"api-key": OLD})
    return volume


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def ring_for(volume: SecretVolume, clock: FakeClock) -> KeyRing:
    return KeyRing.from_directory(volume.directory, check_interval=1.0, clock=clock)


def test_the_current_key_is_accepted_and_others_refused(
    volume: SecretVolume, clock: FakeClock
) -> None:
    ring = ring_for(volume, clock)
    assert ring.verify(OLD)
    assert ring.verify(OLD.encode())
    assert not ring.verify(OTHER)
    assert not ring.verify(OLD[:-1])
    assert not ring.verify(OLD + "x")
    assert not ring.verify("")
    assert not ring.verify(None)


def test_both_keys_are_accepted_during_a_grace(volume: SecretVolume, clock: FakeClock) -> None:
    ring = ring_for(volume, clock)
    volume.write({"api-key": NEW, "api-key-previous": OLD})
    clock.advance(1.0)
    assert ring.verify(OLD)
    assert ring.verify(NEW)
    assert ring.has_previous
    assert not ring.verify(OTHER)


def test_a_new_key_is_accepted_before_the_next_periodic_check(
    volume: SecretVolume, clock: FakeClock
) -> None:
    ring = ring_for(volume, clock)
    volume.write({"api-key": NEW, "api-key-previous": OLD})
    # No time passed: the miss itself makes the ring look at the folder again.
    assert ring.verify(NEW)


def test_the_previous_key_is_refused_once_its_file_is_gone(
    volume: SecretVolume, clock: FakeClock
) -> None:
    ring = ring_for(volume, clock)
    volume.write({"api-key": NEW, "api-key-previous": OLD})
    assert ring.verify(NEW)
    volume.write({"api-key": NEW})
    clock.advance(1.0)
    assert not ring.verify(OLD)
    assert ring.verify(NEW)
    assert not ring.has_previous


def test_the_folder_is_checked_at_most_every_check_interval(
    volume: SecretVolume, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = ring_for(volume, clock)
    checks = []
    import apikey_operator.client.keyring as keyring_module

    real_signature = keyring_module.signature

    def counting_signature(*args: object, **kwargs: object) -> tuple[object, ...]:
        checks.append(1)
        return real_signature(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(keyring_module, "signature", counting_signature)
    for _ in range(100):
        assert ring.verify(OLD)
        clock.advance(0.001)
    assert len(checks) == 0
    clock.advance(1.0)
    assert ring.verify(OLD)
    assert len(checks) == 1


def test_every_verification_compares_against_both_slots(
    volume: SecretVolume, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = ring_for(volume, clock)
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for presented in (OLD, OTHER, "x" * 500):
        calls.clear()
        volume.write({"api-key": OLD})  # unchanged: no reload, no extra work
        ring.verify(presented)
        # Two fixed-size digest comparisons (plus two more after a miss's re-check
        # when the folder changed, which it did not here).
        assert calls[:2] == [32, 32]


def test_a_ring_without_a_current_key_refuses_everything(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    volume.write({"unrelated": "x"})
    ring = KeyRing.from_directory(str(tmp_path))
    assert not ring.has_current
    assert not ring.verify("x")
    assert not ring.verify("")
    volume.write({"api-key": OLD})
    assert ring.verify(OLD)


def test_without_the_current_key_the_previous_key_is_refused_too(tmp_path: Path) -> None:
    """Fail closed: a volume with only the previous key is a broken mount, not a grace."""
    volume = SecretVolume(tmp_path)
    volume.write({"api-key-previous": OLD})
    ring = KeyRing.from_directory(str(tmp_path))
    assert not ring.has_current
    assert not ring.verify(OLD)
    volume.write({"api-key": NEW, "api-key-previous": OLD})
    assert ring.verify(NEW) and ring.verify(OLD)


def test_a_missing_folder_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable):
        KeyRing.from_directory(str(tmp_path / "absent"))


def test_custom_data_key_names(tmp_path: Path) -> None:
    SecretVolume(tmp_path).write({"token": NEW, "token-old": OLD, "api-key": OTHER})
    ring = KeyRing.from_directory(str(tmp_path), current_key="token", previous_key="token-old")
    assert ring.verify(NEW)
    assert ring.verify(OLD)
    assert not ring.verify(OTHER)


def test_presented_values_are_never_logged(
    volume: SecretVolume, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        ring = ring_for(volume, clock)
        ring.verify(OTHER)
        volume.write({"api-key": NEW, "api-key-previous": OLD})
        ring.verify(NEW)
        clock.advance(5)
        ring.verify(OTHER)
    assert "reloaded" in library_log(caplog)
    for key in (OLD, NEW, OTHER):
        assert key not in library_log(caplog)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer  abc "}, "abc"),
        ({"X-API-Key": "abc"}, "abc"),
        ({"x-api-key": " abc "}, "abc"),
        ({"Authorization": "Bearer abc", "X-API-Key": "def"}, "abc"),
        ({"Authorization": "Basic dXNlcjpwYXNz", "X-API-Key": "def"}, "def"),
        ({"Authorization": "Bearer "}, None),
        ({"X-API-Key": ""}, None),
        ({}, None),
    ],
    ids=[
        "a bearer token",
        "bearer in any case",
        "an X-API-Key header",
        "X-API-Key in any case",
        "bearer wins over X-API-Key",
        "basic auth is not a key",
        "an empty bearer token",
        "an empty X-API-Key",
        "no header",
    ],
)
def test_key_from_headers(headers: dict[str, str], expected: str | None) -> None:
    assert key_from_headers(headers) == expected


def test_key_from_headers_reads_http_server_messages() -> None:
    from email.message import Message

    message = Message()
    message["X-Api-Key"] = "abc"
    assert key_from_headers(message) == "abc"


def test_keys_valid_in_every_version_are_never_refused_during_swaps(tmp_path: Path) -> None:
    # The writer flips which of OLD and NEW is current; both stay valid throughout, so
    # any refusal would mean a reader saw a partial or mixed version of the folder.
    volume = SecretVolume(tmp_path)
    volume.write({"api-key": NEW, "api-key-previous": OLD})
    ring = KeyRing.from_directory(str(tmp_path), check_interval=0.0)
    stop = threading.Event()
    refused: list[str] = []
    accepted_other: list[bool] = []
    checks = [0]

    def reader() -> None:
        while not stop.is_set():
            for key in (OLD, NEW):
                if not ring.verify(key):
                    refused.append(key[:9])
            if ring.verify(OTHER):
                accepted_other.append(True)
            checks[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for i in range(500):
            pair = (NEW, OLD) if i % 2 else (OLD, NEW)
            volume.write({"api-key": pair[0], "api-key-previous": pair[1]})
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert refused == []
    assert accepted_other == []
    assert checks[0] > 50


def test_a_plain_folder_is_reloaded_when_its_files_change(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text(OLD + "\n")
    ring = KeyRing.from_directory(str(tmp_path))
    assert ring.verify(OLD)
    (tmp_path / "api-key").write_text(NEW + "-longer\n")
    (tmp_path / "api-key-previous").write_text(OLD + "\n")
    assert ring.verify(NEW + "-longer")
    assert ring.verify(OLD)
