"""Key format, durations and spec validation (pure)."""

from __future__ import annotations

import base64
import math
import re
import zlib

import pytest

from apikey_operator import keys
from apikey_operator.durations import DurationError, parse_duration
from apikey_operator.spec import SpecError, parse_apikey, parse_policy

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("length", [16, 32, 77, 128])
def test_base62_keys_are_left_padded_big_endian_integers(length: int) -> None:
    key = keys.generate(keys.KeyFormat(length=length))
    assert len(key) == math.ceil(8 * length / math.log2(62))
    assert re.fullmatch("[0-9A-Za-z]+", key)
    value = 0
    for char in key:
        value = value * 62 + keys.BASE62_ALPHABET.index(char)
    assert value < 256**length


def test_base62_of_32_bytes_is_43_characters() -> None:
    assert keys.base62_width(32) == 43
    assert keys.encode_body(b"\x00" * 32, "base62") == "0" * 43
    assert keys.encode_body(b"\x00" * 31 + b"\x3d", "base62") == "0" * 42 + "z"


def test_hex_and_base64url_bodies() -> None:
    assert keys.encode_body(b"\xab\x01", "hex") == "ab01"
    raw = bytes(range(32))
    body = keys.encode_body(raw, "base64url")
    assert "=" not in body
    assert base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)) == raw


def test_a_prefixed_key_ends_with_the_base62_crc32_of_prefix_and_body() -> None:
    key = keys.generate(keys.KeyFormat(prefix="bill_"))
    head, tail = key[:-6], key[-6:]
    assert head.startswith("bill_")
    assert tail == keys.base62_encode(zlib.crc32(head.encode()), 6)
    assert keys.matches_format(key, keys.KeyFormat(prefix="bill_"))
    mangled = head[:-1] + ("A" if head[-1] != "A" else "B") + tail
    assert not keys.has_valid_checksum(mangled, "bill_")


def test_fingerprint_is_sha256_prefix() -> None:
    assert keys.fingerprint("abc") == "sha256:ba7816bf8f01"


def test_keys_compare_in_constant_time_helper() -> None:
    assert keys.keys_equal("a", b"a") and not keys.keys_equal("a", "b")


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("36h", 129600), ("1h30m", 5400), ("30d", 2592000),
    ("1.5h", 5400), ("500ms", 0.5),
])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "1y", "-5m", "100000000d", "1h 30m", "x" * 100])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def apikey(spec: dict[str, object]) -> dict[str, object]:
    return {"metadata": {"name": "k", "namespace": "ns"}, "spec": spec}


def test_defaults_follow_the_contract() -> None:
    spec = parse_apikey(apikey({}))
    assert (spec.store, spec.secret_name, spec.current_key, spec.previous_key) == (
        "kubernetes", "k", "api-key", "api-key-previous")
    assert spec.key_format == keys.KeyFormat(32, "base62", "")
    assert spec.deletion_policy == "Delete" and spec.policy_name is None


@pytest.mark.parametrize(("spec", "field"), [
    ({"key": {"length": 8}}, "spec.key.length"),
    ({"key": {"length": "32"}}, "spec.key.length"),
    ({"key": {"length": True}}, "spec.key.length"),
    ({"key": {"encoding": "rot13"}}, "spec.key.encoding"),
    ({"key": {"prefix": "Bad-Prefix"}}, "spec.key.prefix"),
    ({"secret": {"name": "../etc"}}, "spec.secret.name"),
    ({"secret": {"currentKey": "a", "previousKey": "a"}}, "spec.secret.previousKey"),
    ({"secret": {"labels": {"app.kubernetes.io/managed-by": "me"}}}, "spec.secret.labels"),
    ({"secret": {"annotations": {"apikeys.dev/version": "9"}}}, "spec.secret.annotations"),
    ({"scopes": "read"}, "spec.scopes"),
    ({"scopes": ["a b"]}, "spec.scopes[0]"),
    ({"deletionPolicy": "Orphan"}, "spec.deletionPolicy"),
    ({"restartTargets": [{"kind": "Pod", "name": "x"}]}, "spec.restartTargets[0].kind"),
    ({"restartTargets": [{"kind": "Deployment"}]}, "spec.restartTargets[0].name"),
    ({"store": "Vault!"}, "spec.store"),
    ({"key": []}, "spec.key"),
    ({"generator": {"webhook": {}}}, "spec.generator.webhook.name"),
    ({"generator": {"vendor": {}}}, "spec.generator"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_invalid_specs_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_apikey(apikey(spec))
    assert str(info.value).startswith(field)


def test_a_spec_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(SpecError, match=r"^spec must be an object"):
        parse_apikey({"metadata": {"name": "k"}, "spec": ["x"]})


@pytest.mark.parametrize(("spec", "message"), [
    ({"rotateEvery": "30d", "gracePeriod": "40d"}, "spec.gracePeriod 40d is not shorter than"),
    ({"rotateEvery": "0s"}, "spec.rotateEvery 0s is shorter than the minimum 10s"),
    ({"rotateEvery": "100000000d"}, "spec.rotateEvery 100000000d is longer than"),
    ({"rotateEvery": "soon"}, "spec.rotateEvery 'soon' is not a duration"),
    ({}, "spec.rotateEvery must be a duration"),
    ({"rotateEvery": "30d", "namespaceSelector": {"matchExpressions": [{"key": "a",
      "operator": "Near"}]}}, "spec.namespaceSelector.matchExpressions[0].operator"),
])
def test_invalid_policies_name_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_policy({"metadata": {"name": "p"}, "spec": spec})
    assert str(info.value).startswith(message)


def test_policy_selector_admits_by_labels_and_expressions() -> None:
    policy = parse_policy({"metadata": {"name": "p"}, "spec": {
        "rotateEvery": "30d", "namespaceSelector": {
            "matchLabels": {"env": "prod"},
            "matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]},
                                 {"key": "frozen", "operator": "DoesNotExist"}]}}})
    selector = policy.namespace_selector
    assert selector is not None
    assert selector.admits({"env": "prod", "team": "a"})
    assert not selector.admits({"env": "prod", "team": "c"})
    assert not selector.admits({"env": "dev", "team": "a"})
    assert not selector.admits({"env": "prod", "team": "a", "frozen": "1"})
    assert policy.grace_period.total_seconds() == 86400


@pytest.mark.parametrize("garbage", [None, 5, "Ready", [1, "x", {"no": "type"}], {"a": 1}],
                         ids=["none", "int", "string", "junk list", "mapping"])
def test_conditions_survive_a_garbage_status(garbage: object) -> None:
    from datetime import UTC, datetime

    from apikey_operator.conditions import Condition, build_conditions, condition_of

    built = build_conditions([Condition("Ready", True, "Provisioned", "ok")], garbage,  # type: ignore[arg-type]
                             3, datetime(2026, 1, 1, tzinfo=UTC))
    assert [(c["type"], c["status"], c["observedGeneration"]) for c in built] == [
        ("Ready", "True", 3)]
    assert condition_of(garbage, "Ready") == {}  # type: ignore[arg-type]


def test_the_secret_cache_keeps_only_newer_versions() -> None:
    from apikey_operator.reconciler import SecretCache

    cache = SecretCache()
    assert cache.lookup("ns", "s") == (False, None)
    cache.observed({"metadata": {"namespace": "ns", "name": "s", "resourceVersion": "12"},
                    "data": {"k": "bmV3"}})
    cache.observed({"metadata": {"namespace": "ns", "name": "s", "resourceVersion": "11"},
                    "data": {"k": "b2xk"}})
    known, obj = cache.lookup("ns", "s")
    assert known and obj is not None and obj["data"] == {"k": "bmV3"}
    cache.observed({"metadata": {"namespace": "ns", "name": "s", "resourceVersion": "13"}},
                   deleted=True)
    assert cache.lookup("ns", "s") == (True, None)
    cache.forget("ns", "s")
    assert cache.lookup("ns", "s") == (False, None)
    cache.observed({"metadata": {"namespace": "ns", "name": "s", "resourceVersion": "x"}})
    assert cache.lookup("ns", "s") == (False, None)


def test_the_secret_cache_knows_which_secrets_each_key_owns() -> None:
    from apikey_operator.reconciler import SecretCache

    def secret(name: str, version: int, uid: str | None, namespace: str = "ns") -> dict:  # type: ignore[type-arg]
        refs = [{"uid": "other", "controller": False}]
        if uid is not None:
            refs.append({"uid": uid, "controller": True})
        return {"metadata": {"namespace": namespace, "name": name,
                             "resourceVersion": str(version), "ownerReferences": refs}}

    cache = SecretCache()
    cache.observed(secret("b", 1, "k1"))
    cache.observed(secret("a", 2, "k1"))
    cache.observed(secret("c", 3, "k2"))
    cache.observed(secret("a", 4, "k1", namespace="elsewhere"))
    cache.observed(secret("d", 5, None))
    assert cache.owned("ns", "k1") == ["a", "b"]
    assert cache.owned("ns", "other") == []  # not its controller
    cache.observed(secret("b", 6, "k2"))  # adopted by another key
    assert cache.owned("ns", "k1") == ["a"] and cache.owned("ns", "k2") == ["b", "c"]
    cache.observed(secret("b", 5, "k1"))  # an older version changes nothing
    assert cache.owned("ns", "k2") == ["b", "c"]
    cache.observed(secret("a", 7, "k1"), deleted=True)
    cache.forget("ns", "c")
    cache.taken("ns", "b")
    assert cache.owned("ns", "k1") == [] and cache.owned("ns", "k2") == []
    assert cache.owned("elsewhere", "k1") == ["a"]


def test_the_secret_cache_recognises_the_echo_of_a_write() -> None:
    from apikey_operator.reconciler import SecretCache

    cache = SecretCache()
    written = {"metadata": {"namespace": "ns", "name": "s", "resourceVersion": "7"}}
    assert not cache.holds(written)
    cache.observed(written)
    assert cache.holds(written)
    assert not cache.holds({"metadata": {"namespace": "ns", "name": "s", "resourceVersion": "8"}})
