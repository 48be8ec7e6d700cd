"""Shared fixtures for the leak-detection tests: key samples of every format."""

from __future__ import annotations

import itertools

import pytest

from apikey_operator import keys

PREFIXES = ("a", "bill_", "sk_live_", "x0123456789abcde")
LENGTHS = (16, 17, 18, 19, 32, 33, 64, 127, 128)


def key_formats() -> list[keys.KeyFormat]:
    """Every encoding x several prefixes x lengths including both ends of 16..128."""
    return [
        keys.KeyFormat(length=length, encoding=encoding, prefix=prefix)
        for encoding, prefix, length in itertools.product(keys.ENCODINGS, PREFIXES, LENGTHS)
    ]


@pytest.fixture(params=key_formats(), ids=lambda fmt: fmt.describe().replace(" ", "-"))
def key_format(request: pytest.FixtureRequest) -> keys.KeyFormat:
    fmt: keys.KeyFormat = request.param
    return fmt


@pytest.fixture
def all_key_formats() -> list[keys.KeyFormat]:
    return key_formats()
