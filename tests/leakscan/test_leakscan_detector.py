"""The detector finds generated prefixed keys and nothing else."""

from __future__ import annotations

import base64
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apikey_operator import keys
from apikey_operator.leakscan import detector
from apikey_operator.leakscan.detector import Finding, find_keys, is_key

pytestmark = pytest.mark.unit

KEY_ALPHABET = string.ascii_letters + string.digits + "_-"

# Faster for hypothesis than st.from_regex(keys.PREFIX_PATTERN), same language.
prefixes = st.builds(
    str.__add__,
    st.sampled_from(string.ascii_lowercase),
    st.text(string.ascii_lowercase + string.digits + "_", max_size=15),
)


def test_a_generated_key_is_a_key(key_format: keys.KeyFormat) -> None:
    for _ in range(20):
        assert is_key(keys.generate(key_format))


TEMPLATES = (
    "{key}",
    'API_KEY = "{key}"',
    "export TOKEN={key}\n",
    "Authorization: Bearer {key}",
    "https://api.example/v1?key={key}&x=1",
    "glued to a name: API_KEY_{key}",
    "glued to a suffix: {key}_old",
    "glued to a suffix with a dash: {key}-backup",
    '{{"apiKey": "{key}"}}',
)


def test_a_key_in_text_is_found_at_its_exact_position(key_format: keys.KeyFormat) -> None:
    for template in TEMPLATES:
        key = keys.generate(key_format)
        text = template.format(key=key)
        found = list(find_keys(text))
        start = text.index(key)
        assert [(f.start, f.end, f.key, f.encoded) for f in found] == [
            (start, start + len(key), key, False)
        ], template
        assert found[0].fingerprint == keys.fingerprint(key)


def test_several_keys_on_one_line_are_all_found() -> None:
    first = keys.generate(keys.KeyFormat(prefix="bill_"))
    second = keys.generate(keys.KeyFormat(encoding="hex", prefix="ops_"))
    found = list(find_keys(f"{first},{second} {first}"))
    assert [f.key for f in found] == [first, second, first]


@pytest.mark.parametrize("encoding", keys.ENCODINGS)
def test_keys_without_a_prefix_are_not_detectable(encoding: keys.Encoding) -> None:
    # No checksum, so nothing tells them apart from any random string: documented limitation.
    for _ in range(200):
        assert list(find_keys(keys.generate(keys.KeyFormat(encoding=encoding)))) == []


def test_a_finding_never_shows_the_key_in_its_repr() -> None:
    key = keys.generate(keys.KeyFormat(prefix="bill_"))
    (finding,) = find_keys(key)
    assert key not in repr(finding)
    assert key not in str(finding)
    assert finding.fingerprint in f"{finding.fingerprint}"


@st.composite
def mangled_keys(draw: st.DrawFn) -> tuple[str, str]:
    fmt = draw(
        st.builds(
            keys.KeyFormat,
            length=st.integers(keys.MIN_LENGTH, keys.MAX_LENGTH),
            encoding=st.sampled_from(keys.ENCODINGS),
            prefix=prefixes,
        )
    )
    key = keys.generate(fmt)
    index = draw(st.integers(0, len(key) - 1))
    replacement = draw(st.sampled_from(KEY_ALPHABET + " .=/+").filter(lambda c: c != key[index]))
    return key, key[:index] + replacement + key[index + 1 :]


@settings(max_examples=1000, deadline=None)
@given(mangled_keys())
def test_a_key_with_any_one_character_changed_is_not_found(pair: tuple[str, str]) -> None:
    key, mangled = pair
    assert is_key(key)
    assert not is_key(mangled)
    assert list(find_keys(f"token: {mangled}\n")) == []


@pytest.mark.parametrize("position", ["prefix", "body", "checksum"])
def test_every_single_character_change_of_one_key_is_rejected(position: str) -> None:
    prefix = "bill_"
    key = keys.generate(keys.KeyFormat(prefix=prefix))
    span = {
        "prefix": range(len(prefix)),
        "body": range(len(prefix), len(key) - keys.CHECKSUM_LENGTH),
        "checksum": range(len(key) - keys.CHECKSUM_LENGTH, len(key)),
    }[position]
    for index in span:
        for char in KEY_ALPHABET:
            if char != key[index]:
                mangled = key[:index] + char + key[index + 1 :]
                assert list(find_keys(mangled)) == [], (index, char)


SHAPED_PER_EXAMPLE = 10


@st.composite
def shaped_strings(draw: st.DrawFn) -> list[str]:
    """prefix + legal body + 6 random base62 characters: keys' shapes with random checksums.

    Several strings per example, from a drawn seed: hypothesis's per-example cost
    would otherwise dominate a 10k-string property.
    """
    prefix = draw(prefixes)
    rng = random.Random(draw(st.integers(0, 2**64)))
    strings = []
    for _ in range(SHAPED_PER_EXAMPLE):
        length = rng.randint(keys.MIN_LENGTH, keys.MAX_LENGTH)
        body = keys.encode_body(rng.randbytes(length), rng.choice(keys.ENCODINGS))
        tail = "".join(rng.choices(keys.BASE62_ALPHABET, k=keys.CHECKSUM_LENGTH))
        strings.append(prefix + body + tail)
    return strings


@settings(max_examples=10_000 // SHAPED_PER_EXAMPLE, deadline=None, database=None)
@given(shaped_strings())
def test_random_strings_of_the_right_shape_are_not_reported(candidates: list[str]) -> None:
    # A random checksum verifies with probability 2**-32: zero expected in 10k strings.
    for candidate in candidates:
        assert detector.has_key_shape(candidate[: -keys.CHECKSUM_LENGTH])
        assert list(find_keys(f"x = '{candidate}'")) == []


def test_random_key_alphabet_noise_yields_nothing() -> None:
    rng = random.Random(20261128)
    for _ in range(2000):
        noise = "".join(rng.choice(KEY_ALPHABET) for _ in range(rng.randint(29, 600)))
        assert list(find_keys(noise)) == []


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("bill_" + "0" * 43, True),
        ("Bill_" + "0" * 43, False),  # a prefix starts with a lowercase letter
        ("_bill" + "0" * 43, False),
        ("b" + "0" * 21, False),  # shorter than any body
        ("b" + "f" * 32, True),  # hex, 16 bytes
        ("b" + "0" * 300, False),  # longer than any body
        ("b" + "z" * 22, False),  # base62 22 digits of z exceed 2**128
        ("b" + "-" * 22, False),  # base64url whose last character has unused bits set
    ],
)
def test_shape_rules(head: str, expected: bool) -> None:
    assert detector.has_key_shape(head) is expected


def test_findings_compare_by_position_and_key() -> None:
    assert Finding(0, 3, "abc") == Finding(0, 3, "abc")
    assert Finding(0, 3, "abc") != Finding(1, 4, "abc")


def test_a_long_run_of_key_characters_is_scanned_quickly_and_correctly() -> None:
    key = keys.generate(keys.KeyFormat(prefix="bill_"))
    blob = "A" * 200_000
    assert [f.key for f in find_keys(blob + "_" + key)] == [key]
    assert [f.key for f in find_keys(key + "_" + blob)] == [key]


@pytest.mark.parametrize("encoding", keys.ENCODINGS)
def test_base64_encoded_keys_are_found_as_in_a_secret_manifest(encoding: keys.Encoding) -> None:
    key = keys.generate(keys.KeyFormat(encoding=encoding, prefix="bill_"))
    tokens = [
        base64.b64encode(key.encode()).decode(),  # kubectl create secret --from-literal
        base64.b64encode(f"{key}\n".encode()).decode(),  # echo ... | base64
        base64.b64encode(f"API_KEY={key}\nDEBUG=1\n".encode()).decode(),  # a whole .env file
        base64.urlsafe_b64encode(f"{{'key': '{key}'}}".encode()).decode().rstrip("="),
    ]
    for token in tokens:
        text = f"data:\n  api-key: {token}\n"
        (finding,) = find_keys(text)
        assert (finding.start, finding.end) == (text.index(token), text.index(token) + len(token))
        assert finding.key == key
        assert finding.encoded
        assert finding.fingerprint == keys.fingerprint(key)
        assert list(find_keys(text, decode_base64=False)) == []


def test_base64_of_a_mangled_key_is_not_found() -> None:
    key = keys.generate(keys.KeyFormat(prefix="bill_"))
    for index in range(len(key)):
        mangled = key[:index] + ("0" if key[index] != "0" else "1") + key[index + 1 :]
        assert list(find_keys(base64.b64encode(mangled.encode()).decode())) == []


def test_a_plain_key_is_reported_once_not_also_as_base64() -> None:
    key = keys.generate(keys.KeyFormat(encoding="base64url", prefix="bill_", length=48))
    (finding,) = find_keys(f"k={key}")
    assert (finding.key, finding.encoded) == (key, False)
