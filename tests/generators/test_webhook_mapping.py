"""Pure parts of the webhook generator: status mapping, Retry-After, backoff, answer checks."""

from __future__ import annotations

import pytest

from apikey_operator.generators import GeneratorError
from apikey_operator.generators.webhook import (
    BACKOFF_CAP_SECONDS,
    backoff_delay,
    is_transient_status,
    minted_from_answer,
    parse_retry_after,
    status_text,
)

pytestmark = pytest.mark.unit

KEY = "vnd_0123456789abcdefABCDEF0123456789xyzXYZ"


@pytest.mark.parametrize(("status", "transient"), [
    (400, False), (401, False), (403, False), (404, False), (409, False), (422, False),
    (408, True), (429, True), (500, True), (502, True), (503, True), (504, True),
], ids=lambda v: str(v))
def test_throttling_timeouts_and_5xx_are_transient_other_4xx_are_answers(
    status: int, transient: bool
) -> None:
    assert is_transient_status(status) is transient


def test_status_text_uses_the_standard_phrase_only() -> None:
    assert status_text(503) == "503 Service Unavailable"
    assert status_text(599) == "599"


@pytest.mark.parametrize(("header", "seconds"), [
    (None, None), ("", None), ("7", 7.0), (" 12 ", 12.0), ("soon", None), ("-3", None),
    ("Sat, 28 Nov 2026 00:00:30 GMT", 30.0), ("Fri, 27 Nov 2026 23:00:00 GMT", 0.0),
], ids=["absent", "empty", "seconds", "padded", "garbage", "negative", "a date",
        "a past date"])
def test_retry_after_accepts_seconds_and_http_dates(header: str | None,
                                                    seconds: float | None) -> None:
    now = 1795824000.0  # 2026-11-28T00:00:00Z
    assert parse_retry_after(header, now) == seconds


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    lows = [backoff_delay(n, lambda: 0.0) for n in range(8)]
    highs = [backoff_delay(n, lambda: 1.0) for n in range(8)]
    assert highs[:4] == [0.5, 1.0, 2.0, 4.0]
    assert max(highs) == BACKOFF_CAP_SECONDS
    assert all(low == high / 2 for low, high in zip(lows, highs, strict=True))


def test_a_valid_answer_gives_the_key_and_the_id() -> None:
    minted = minted_from_answer({"id": "key_01:a.b-c", "key": KEY, "extra": 1})
    assert (minted.key, minted.external_id) == (KEY, "key_01:a.b-c")
    assert KEY not in repr(minted)


@pytest.mark.parametrize(("answer", "message"), [
    ([], "not a JSON object"),
    ({"key": KEY}, "no valid 'id'"),
    ({"id": "", "key": KEY}, "no valid 'id'"),
    ({"id": "a" * 257, "key": KEY}, "no valid 'id'"),
    ({"id": "..", "key": KEY}, "no valid 'id'"),
    ({"id": "a/b", "key": KEY}, "no valid 'id'"),
    ({"id": 12, "key": KEY}, "no valid 'id'"),
    ({"id": "k1"}, "no 'key'"),
    ({"id": "k1", "key": ""}, "no 'key'"),
    ({"id": "k1", "key": 42}, "no 'key'"),
    ({"id": "k1", "key": "x" * 1025}, "not 1..1024 printable"),
    ({"id": "k1", "key": "two words"}, "not 1..1024 printable"),
    ({"id": "k1", "key": "line\nbreak"}, "not 1..1024 printable"),
], ids=["a list", "no id", "an empty id", "a long id", "a dot-dot id", "a slash in the id",
        "a numeric id", "no key", "an empty key", "a numeric key", "a long key", "a space",
        "a newline"])
def test_a_bad_answer_is_refused_without_echoing_it(answer: object, message: str) -> None:
    with pytest.raises(GeneratorError, match=message) as info:
        minted_from_answer(answer)
    assert "x" * 20 not in str(info.value) and KEY not in str(info.value)
    assert "two words" not in str(info.value)


@pytest.mark.parametrize("key_id", [KEY, f"id-{KEY}", KEY[4:20]],
                         ids=["the key itself", "the key inside the id", "a long run of the key"])
def test_an_id_that_is_key_material_is_refused_and_the_key_is_masked(key_id: str) -> None:
    """Issue 18, finding 7: the id is logged and routed by; it must never carry the key."""
    from apikey_operator import redaction

    with pytest.raises(GeneratorError, match="part of\\) the key itself") as info:
        minted_from_answer({"id": key_id, "key": KEY})
    assert KEY not in str(info.value)
    assert redaction.is_registered(KEY)  # registered before anything could log it


def test_a_short_shared_prefix_is_not_key_material() -> None:
    minted = minted_from_answer({"id": "vnd_0123", "key": KEY})
    assert minted.external_id == "vnd_0123"
