"""Durations as users write them: Go-style units plus `d` for days (pure)."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h|d)")
# Far beyond any sane rotation period, and safely inside datetime's range.
MAX_DURATION = timedelta(days=3650)
MAX_TEXT_LENGTH = 64


class DurationError(ValueError):
    """The text is not a duration we accept; the message says why."""


def parse_duration(text: object) -> timedelta:
    """Parse `30d`, `1h30m`, `90s`... into a timedelta bounded by MAX_DURATION."""
    if not isinstance(text, str) or not text:
        raise DurationError("must be a duration string such as 30d, 36h or 15m")
    if len(text) > MAX_TEXT_LENGTH:
        raise DurationError("is too long to be a duration")
    position = 0
    seconds = 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise DurationError(f"{text!r} is not a duration (use units s, m, h, d, e.g. 30d or 1h30m)")
    if seconds > MAX_DURATION.total_seconds():
        raise DurationError(f"{text} is longer than the maximum of {MAX_DURATION.days}d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """A compact human form (`1d2h`, `90s` -> `1m30s`) for messages."""
    total = int(value.total_seconds())
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
