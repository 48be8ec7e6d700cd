"""Find prefixed API keys in text and prove them real by their CRC32 checksum (pure).

Only keys with a prefix can be detected: they end with a 6-character base62
CRC32 of everything before it, so a random string of the same shape passes
with probability about 2**-32. A key without a prefix is just random
base62 / base64url / hex and is indistinguishable from any other such string.

Where a key starts inside a run of key characters is ambiguous (`x_bill_...`
could hold the prefix `x_bill_` or `bill_`; body characters can look like
prefix characters), so every start is tried. The checksum covers
prefix + body as one string, so it does not depend on where the prefix ends;
the split only decides whether the token has a legal shape, and any split
whose prefix matches the prefix pattern is accepted.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from apikey_operator.keys import (
    BASE62_ALPHABET,
    CHECKSUM_LENGTH,
    MAX_LENGTH,
    MIN_LENGTH,
    base62_encode,
    base62_width,
    fingerprint,
)

MAX_PREFIX_LENGTH = 16
_HEX_CHARS = frozenset("0123456789abcdef")
_BASE62_CHARS = frozenset(BASE62_ALPHABET)
_BASE62_DIGITS = {char: index for index, char in enumerate(BASE62_ALPHABET)}
_BASE64URL_CHARS = _BASE62_CHARS | {"-", "_"}
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_PREFIX_CHARS = _LOWER | frozenset("0123456789_")
# CRC32 < 2**32 < 5 * 62**5, so a checksum's first base62 digit is one of these.
_CHECKSUM_LEADS = frozenset("01234")

# Body width -> entropy in bytes, per encoding (each map is one-to-one for 16..128 bytes).
_BASE62_WIDTHS = {base62_width(n): n for n in range(MIN_LENGTH, MAX_LENGTH + 1)}
_BASE64URL_WIDTHS = {
    len(base64.urlsafe_b64encode(bytes(n)).rstrip(b"=")): n
    for n in range(MIN_LENGTH, MAX_LENGTH + 1)
}
_HEX_WIDTHS = {2 * n: n for n in range(MIN_LENGTH, MAX_LENGTH + 1)}

MIN_BODY_WIDTH = min(*_BASE62_WIDTHS, *_BASE64URL_WIDTHS, *_HEX_WIDTHS)
MAX_BODY_WIDTH = max(*_BASE62_WIDTHS, *_BASE64URL_WIDTHS, *_HEX_WIDTHS)
MIN_KEY_LENGTH = 1 + MIN_BODY_WIDTH + CHECKSUM_LENGTH
MAX_KEY_LENGTH = MAX_PREFIX_LENGTH + MAX_BODY_WIDTH + CHECKSUM_LENGTH

# Every character a key of any encoding can contain. Keys are looked for at the
# edges of maximal runs of these (see `_spans_in_run`).
KEY_CHARS_CLASS = "[A-Za-z0-9_-]"
_RUN = re.compile(KEY_CHARS_CLASS + f"{{{MIN_KEY_LENGTH},}}", re.ASCII)
# A base64 (standard or URL-safe) token long enough to hold the shortest key.
_BASE64_RUN = re.compile(
    f"[A-Za-z0-9+/_-]{{{math.ceil(4 * MIN_KEY_LENGTH / 3)},}}={{0,2}}", re.ASCII
)


@dataclass(frozen=True)
class Finding:
    """A verified key found at text[start:end]. The key itself is kept out of repr()."""

    start: int
    end: int
    key: str = field(repr=False)
    encoded: bool = False  # text[start:end] is base64 of the key rather than the key

    @property
    def fingerprint(self) -> str:
        """The contract's fingerprint of the key (`sha256:` + 12 hex digits): safe to print."""
        return fingerprint(self.key)


def _base62_value(digits: str) -> int:
    value = 0
    for digit in digits:
        value = value * 62 + _BASE62_DIGITS[digit]
    return value


def _is_base64url_body(body: str) -> bool:
    # Unpadded base64 leaves unused low bits in the last character: a real body
    # has them zero, i.e. it re-encodes to itself.
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") == body


def is_body(body: str) -> bool:
    """Whether `body` is exactly what `keys.encode_body` can produce for 16..128 bytes."""
    width = len(body)
    if width in _HEX_WIDTHS and _HEX_CHARS.issuperset(body):
        return True
    length = _BASE62_WIDTHS.get(width)
    # A base62 body encodes a `length`-byte integer; larger values never occur.
    if length is not None and _BASE62_CHARS.issuperset(body) and _base62_value(body) < 256**length:
        return True
    return (
        width in _BASE64URL_WIDTHS
        and _BASE64URL_CHARS.issuperset(body)
        and _is_base64url_body(body)
    )


def has_key_shape(head: str) -> bool:
    """Whether `head` (a key without its checksum) splits into a legal prefix and body."""
    if not head or head[0] not in _LOWER:
        return False
    longest = 1
    while longest < min(MAX_PREFIX_LENGTH, len(head)) and head[longest] in _PREFIX_CHARS:
        longest += 1
    for split in range(longest, 0, -1):
        body_width = len(head) - split
        if body_width > MAX_BODY_WIDTH:
            break
        if body_width >= MIN_BODY_WIDTH and is_body(head[split:]):
            return True
    return False


def _checksum_matches(head: bytes, tail: str) -> bool:
    return base62_encode(zlib.crc32(head), CHECKSUM_LENGTH) == tail


def _could_be_checksum(tail: str) -> bool:
    return tail[0] in _CHECKSUM_LEADS and _BASE62_CHARS.issuperset(tail)


def is_key(token: str) -> bool:
    """Whether the whole of `token` is a prefixed key with a valid checksum."""
    if not MIN_KEY_LENGTH <= len(token) <= MAX_KEY_LENGTH or not token.isascii():
        return False
    head, tail = token[:-CHECKSUM_LENGTH], token[-CHECKSUM_LENGTH:]
    return (
        _could_be_checksum(tail)
        and _checksum_matches(head.encode("ascii"), tail)
        and has_key_shape(head)
    )


def _spans_in_run(run: str) -> Iterator[tuple[int, int]]:
    """Spans of `run` that hold a verified key, anchored at the run's end or its start.

    A key inside a longer run of key characters is usually glued to other text on
    one side only (`API_KEY_bill_...`, `bill_..._old`); trying every span of a long
    run would cost quadratic time on base64 blobs, so only the edges are anchors.
    Cheap filters come first: the leading-digit test rejects ~92% of tails before
    any CRC is computed.
    """
    data = run.encode("ascii")
    size = len(run)
    head_end = size - CHECKSUM_LENGTH
    if _could_be_checksum(run[head_end:]):
        tail = run[head_end:]
        for start in range(max(0, size - MAX_KEY_LENGTH), size - MIN_KEY_LENGTH + 1):
            if (
                run[start] in _LOWER
                and _checksum_matches(data[start:head_end], tail)
                and has_key_shape(run[start:head_end])
            ):
                yield start, size
    if run[0] not in _LOWER:
        return
    for end in range(MIN_KEY_LENGTH, min(size - 1, MAX_KEY_LENGTH) + 1):
        tail = run[end - CHECKSUM_LENGTH : end]
        if (
            _could_be_checksum(tail)
            and _checksum_matches(data[: end - CHECKSUM_LENGTH], tail)
            and has_key_shape(run[: end - CHECKSUM_LENGTH])
        ):
            yield 0, end


def _plain_findings(text: str) -> Iterator[Finding]:
    for run in _RUN.finditer(text):
        offset = run.start()
        for start, end in _spans_in_run(run.group()):
            yield Finding(offset + start, offset + end, text[offset + start : offset + end])


def _decode_base64(token: str) -> str | None:
    body = token.rstrip("=")
    if len(body) % 4 == 1:
        return None
    standard, urlsafe = "+" in body or "/" in body, "-" in body or "_" in body
    if standard and urlsafe:
        return None
    padded = body + "=" * (-len(body) % 4)
    try:
        raw = base64.b64decode(padded) if standard else base64.urlsafe_b64decode(padded)
    except (binascii.Error, ValueError):
        return None
    # latin-1 maps every byte to one character; only ASCII runs can hold a key anyway.
    return raw.decode("latin-1")


def _encoded_findings(text: str) -> Iterator[Finding]:
    for token in _BASE64_RUN.finditer(text):
        decoded = _decode_base64(token.group())
        if decoded is None:
            continue
        for inner in _plain_findings(decoded):
            yield Finding(token.start(), token.end(), inner.key, encoded=True)


def find_keys(text: str, *, decode_base64: bool = True) -> Iterator[Finding]:
    """Every verified prefixed key in `text`, in order of position, without overlaps.

    A key is found when it is delimited by characters outside [A-Za-z0-9_-] on at
    least one side; one glued to key characters on both sides is not looked for.
    With `decode_base64`, base64 / base64url tokens are decoded and searched too, as
    in a Kubernetes Secret manifest's `data:`; such a finding spans the whole token
    and its `key` is the decoded key.
    """
    found = list(_plain_findings(text))
    if decode_base64:
        found.extend(_encoded_findings(text))
    last_end = -1
    for finding in sorted(set(found), key=lambda f: (f.start, -f.end)):
        if finding.start >= last_end:
            last_end = finding.end
            yield finding
