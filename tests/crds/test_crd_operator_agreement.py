"""What the CRD schema admits, the operator's own spec parser accepts.

Objects can reach the operator without the schema's help (spec.py re-checks every
field), but the two must agree: an object the API server admits and the operator
then rejects would sit Stalled with no hint at apply time. Hypothesis generates
objects from the CRD schemas, with a small generator for the OpenAPI subset CRDs
use (hypothesis-jsonschema 0.23 breaks on object schemas with current Hypothesis).
The few rules a structural schema cannot express (label keys, reserved prefixes,
currentKey != previousKey, grace < rotateEvery, In/NotIn need values) are left to
the operator, which reports them as InvalidSpec.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_crd_schemas import APIKEY_CRD, POLICY_CRD, apply_defaults, load_crd, schema_of

from apikey_operator.durations import parse_duration
from apikey_operator.spec import (
    MIN_ROTATE_EVERY,
    MIN_UNUSED_FOR,
    SpecError,
    parse_apikey,
    parse_policy,
)

pytestmark = pytest.mark.unit

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for a structural schema built from type, enum, bounds and patterns."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**31)), schema.get("maximum", 2**31))
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 64)
        text = (
            st.from_regex(schema["pattern"], fullmatch=True)
            if "pattern" in schema
            else st.text(max_size=high)
        )
        return text.filter(lambda value: low <= len(value) <= high)
    if kind == "array":
        return st.lists(from_schema(schema["items"]), max_size=min(schema.get("maxItems", 4), 4))
    required = set(schema.get("required", []))
    properties = schema.get("properties", {})
    return st.fixed_dictionaries(
        {name: from_schema(sub) for name, sub in properties.items() if name in required},
        optional={
            name: from_schema(sub) for name, sub in properties.items() if name not in required
        },
    )


def spec_schema(crd: dict[str, Any], drop: dict[str, list[str]]) -> dict[str, Any]:
    """The spec schema, minus the parts whose extra rules only the operator checks."""
    spec = copy.deepcopy(schema_of(crd)["properties"]["spec"])
    for parent, names in drop.items():
        node = spec if parent == "" else spec["properties"][parent]
        for name in names:
            node["properties"].pop(name)
    return spec


APIKEY_SPEC = spec_schema(load_crd(APIKEY_CRD), {"secret": ["labels", "annotations"]})
POLICY_SPEC = spec_schema(load_crd(POLICY_CRD), {"": ["namespaceSelector"]})


@SETTINGS
@given(spec=from_schema(APIKEY_SPEC))
def test_every_apikey_the_crd_admits_parses(spec: dict[str, Any]) -> None:
    full = apply_defaults(
        schema_of(load_crd(APIKEY_CRD)),
        {
            "apiVersion": "apikeys.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {"name": "k", "namespace": "ns"},
            "spec": spec,
        },
    )
    secret = full["spec"]["secret"]
    assume(secret["currentKey"] != secret["previousKey"])
    parsed = parse_apikey(full)
    assert parsed.key_format.length == full["spec"]["key"]["length"]
    assert parsed.store == full["spec"]["store"]
    webhook = full["spec"].get("generator", {}).get("webhook")
    assert parsed.generator == (webhook["name"] if webhook else None)


@SETTINGS
@given(
    labels=st.dictionaries(
        st.sampled_from(["team", "app.kubernetes.io/part-of", "example.com/tier"]),
        from_schema(
            schema_of(load_crd(APIKEY_CRD))["properties"]["spec"]["properties"]["secret"][
                "properties"
            ]["labels"]["additionalProperties"]
        ),
    )
)
def test_every_label_value_the_crd_admits_parses(labels: dict[str, str]) -> None:
    body = {"metadata": {"name": "k"}, "spec": {"secret": {"labels": labels}}}
    assert dict(parse_apikey(body).secret_labels) == labels


@SETTINGS
@given(spec=from_schema(POLICY_SPEC))
def test_every_policy_the_crd_admits_parses_or_is_an_operator_only_rule(
    spec: dict[str, Any],
) -> None:
    full = apply_defaults(
        schema_of(load_crd(POLICY_CRD)), {"metadata": {"name": "p"}, "spec": spec}
    )
    try:
        every = parse_duration(full["spec"]["rotateEvery"])
        grace = parse_duration(full["spec"]["gracePeriod"])
        max_age = (parse_duration(full["spec"]["maxKeyAge"]) if "maxKeyAge" in full["spec"]
                   else None)
        early = full["spec"].get("earlyExpiry")
        unused = parse_duration(early["unusedFor"]) if early else None
        minimum = (parse_duration(early.get("minimumGrace", early["unusedFor"])) if early
                   else None)
    except ValueError:
        # Patterns admit absurd magnitudes (e.g. 99999999d); the operator caps them.
        with pytest.raises(SpecError):
            parse_policy(full)
        return
    early_bad = unused is not None and minimum is not None and not (
        MIN_UNUSED_FOR <= unused < grace and MIN_UNUSED_FOR <= minimum < grace)
    if every < MIN_ROTATE_EVERY or grace >= every or early_bad:
        with pytest.raises(SpecError):
            parse_policy(full)
        return
    parsed = parse_policy(full)
    assert parsed.rotate_every == every and parsed.grace_period == grace
    assert parsed.max_key_age == max_age
    if unused is None:
        assert parsed.early_expiry is None
    else:
        assert parsed.early_expiry is not None
        assert (parsed.early_expiry.unused_for, parsed.early_expiry.minimum_grace) == (
            unused, minimum)
