"""Key generation, encodings, prefix checksums and fingerprints (pure, no I/O).

The format is the contract's "Key format": base62 / base64url / hex bodies, and
for prefixed keys a 6-character base62 CRC32 checksum so that leak scanners can
tell a real key from a random string of the same shape.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["base62", "base64url", "hex"]
ENCODINGS: tuple[Encoding, ...] = ("base62", "base64url", "hex")

BASE62_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CHECKSUM_LENGTH = 6
MIN_LENGTH = 16
MAX_LENGTH = 128
DEFAULT_LENGTH = 32
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
_LOG2_62 = math.log2(62)


@dataclass(frozen=True)
class KeyFormat:
    """What a key looks like: entropy in bytes, body encoding and optional prefix."""

    length: int = DEFAULT_LENGTH
    encoding: Encoding = "base62"
    prefix: str = ""

    def describe(self) -> str:
        prefix = f", prefix {self.prefix!r}" if self.prefix else ""
        return f"{self.length} bytes {self.encoding}{prefix}"


def base62_width(length: int) -> int:
    """Number of base62 digits that can hold any `length`-byte integer."""
    return math.ceil(8 * length / _LOG2_62)


def base62_encode(value: int, width: int) -> str:
    digits: list[str] = []
    while value:
        value, digit = divmod(value, 62)
        digits.append(BASE62_ALPHABET[digit])
    return "".join(reversed(digits)).rjust(width, "0")


def encode_body(raw: bytes, encoding: Encoding) -> str:
    if encoding == "hex":
        return raw.hex()
    if encoding == "base64url":
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    return base62_encode(int.from_bytes(raw, "big"), base62_width(len(raw)))


def checksum(prefix_and_body: str) -> str:
    """The 6-character base62 CRC32 of the UTF-8 bytes of prefix + body."""
    return base62_encode(zlib.crc32(prefix_and_body.encode("utf-8")), CHECKSUM_LENGTH)


def generate(fmt: KeyFormat) -> str:
    """A fresh key from the OS CSPRNG in exactly the contract's format."""
    body = encode_body(secrets.token_bytes(fmt.length), fmt.encoding)
    if not fmt.prefix:
        return body
    return fmt.prefix + body + checksum(fmt.prefix + body)


def fingerprint(key: str) -> str:
    """A short, non-reversible identifier safe to show in status, events and logs."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def keys_equal(a: str | bytes, b: str | bytes) -> bool:
    """Constant-time comparison of two keys."""
    left = a.encode("utf-8") if isinstance(a, str) else a
    right = b.encode("utf-8") if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def body_pattern(encoding: Encoding, length: int) -> str:
    """A regex fragment matching exactly one body of this encoding and length."""
    if encoding == "hex":
        return f"[0-9a-f]{{{2 * length}}}"
    if encoding == "base64url":
        return f"[A-Za-z0-9_-]{{{math.ceil(4 * length / 3)}}}"
    return f"[0-9A-Za-z]{{{base62_width(length)}}}"


def matches_format(key: str, fmt: KeyFormat) -> bool:
    """Whether `key` has the exact shape (and, when prefixed, a valid checksum) of `fmt`."""
    suffix = f"[0-9A-Za-z]{{{CHECKSUM_LENGTH}}}" if fmt.prefix else ""
    pattern = re.escape(fmt.prefix) + "(" + body_pattern(fmt.encoding, fmt.length) + ")" + suffix
    if not re.fullmatch(pattern, key):
        return False
    if fmt.prefix:
        return has_valid_checksum(key, fmt.prefix)
    return True


def has_valid_checksum(key: str, prefix: str) -> bool:
    """Whether a prefixed key ends with the checksum of everything before it."""
    if not key.startswith(prefix) or len(key) <= len(prefix) + CHECKSUM_LENGTH:
        return False
    head, tail = key[:-CHECKSUM_LENGTH], key[-CHECKSUM_LENGTH:]
    return hmac.compare_digest(checksum(head), tail)
