"""The suite-wide leak scan itself: what it records, where it looks, what it reports."""

from __future__ import annotations

import logging

import pytest

from apikey_operator import keys, redaction
from tests.support.faults_leakscan import LeakScan, _CaptureHandler

pytestmark = pytest.mark.unit


def test_a_key_found_anywhere_in_a_text_is_reported_by_fingerprint_only() -> None:
    scan = LeakScan()
    key = keys.generate(keys.KeyFormat(32, "base62", "bill_"))
    hexkey = keys.generate(keys.KeyFormat(16, "hex"))
    scan.add_key(key)
    scan.add_key(hexkey)
    scan.add_text("events", f"rotated, new key={key}.")
    scan.add_text("status", f"glued:xx{hexkey}yy and nothing else")
    scan.add_text("clean", "sha256:" + "0" * 12)
    found = scan.findings()
    assert found == sorted([("events", keys.fingerprint(key)),
                            ("status", keys.fingerprint(hexkey))])
    assert all(key not in repr(f) and hexkey not in repr(f) for f in found)


def test_keys_learned_after_the_text_was_seen_are_still_found() -> None:
    scan = LeakScan()
    key = keys.generate(keys.KeyFormat(24, "base64url"))
    scan.add_text("log", f"value {key}")
    assert scan.findings() == []
    scan.add_key(key)
    assert scan.findings() == [("log", keys.fingerprint(key))]


def test_logs_are_scanned_after_redaction_at_every_level() -> None:
    scan = LeakScan()
    redaction.add_observer(scan.add_key)
    handler = _CaptureHandler(scan)
    logger = logging.getLogger("apikey_operator.test-leakscan")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        registered = keys.generate(keys.KeyFormat(32, "base62", "live_"))
        redaction.register(registered)
        logger.debug("registered key %s", registered)
        stray = keys.generate(keys.KeyFormat(32, "base62"))
        scan.add_key(stray)
        logger.error("unregistered", extra={"detail": {"k": stray}})
    finally:
        logger.removeHandler(handler)
        redaction.remove_observer(scan.add_key)
    assert scan.key_count == 2
    # The registered key was redacted before anything saw it; the stray one leaked.
    assert scan.findings() == [("log apikey_operator.test-leakscan ERROR",
                                keys.fingerprint(stray))]
