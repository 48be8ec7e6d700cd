"""Property tests: specs generated from the CRD schemas (by `corpus_schema`) and arbitrary
JSON, against the operator's own validation (what a lenient or older API server could let
through).

For every input the operator's parser either accepts it or raises `SpecError`
with a message naming a field, never any other exception; every schema-valid spec
is accepted unless it breaks one of the few documented cross-field rules.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apikey_operator.spec import SpecError, parse_apikey, parse_policy
from tests.support.corpus_schema import from_crd_schema

pytestmark = pytest.mark.unit

CRDS = pathlib.Path(__file__).resolve().parents[2] / "crds"


def _schema(file: str, part: str) -> dict[str, Any]:
    crd = yaml.safe_load((CRDS / file).read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][part]
    return _plain(schema)


def _plain(node: Any) -> Any:
    """The schema without defaults and descriptions."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items() if k not in ("default", "description")}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


APIKEY_SPEC = _schema("apikeys.dev_apikeys.yaml", "spec")
POLICY_SPEC = _schema("apikeys.dev_rotationpolicies.yaml", "spec")
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                    | st.text(max_size=40),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=12), children, max_size=4),
                    max_leaves=20)
CROSS_FIELD_RULES = ("must differ from", "is reserved for the operator")
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _apikey(spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "billing", "namespace": "payments"}, "spec": spec}


@FAST
@given(from_crd_schema(APIKEY_SPEC))
def test_every_schema_valid_apikey_spec_is_accepted_or_breaks_a_cross_field_rule(
    spec: dict[str, Any]
) -> None:
    try:
        parsed = parse_apikey(_apikey(spec))
    except SpecError as exc:
        assert any(rule in str(exc) for rule in CROSS_FIELD_RULES), str(exc)
    else:
        assert 16 <= parsed.key_format.length <= 128
        assert parsed.current_key != parsed.previous_key


@FAST
@given(JSON)
def test_arbitrary_json_as_a_spec_is_refused_with_a_field_path_or_accepted(value: Any) -> None:
    try:
        parse_apikey(_apikey(value))
    except SpecError as exc:
        assert str(exc).startswith(("spec", "metadata")), str(exc)


@FAST
@given(st.dictionaries(st.sampled_from(["store", "key", "secret", "scopes", "deletionPolicy",
                                        "restartTargets", "generator", "rotationPolicyRef"]),
                       JSON, max_size=5))
def test_arbitrary_values_in_known_fields_never_crash_the_parser(spec: dict[str, Any]) -> None:
    try:
        parse_apikey(_apikey(spec))
    except SpecError as exc:
        assert str(exc).startswith("spec"), str(exc)


@FAST
@given(from_crd_schema(POLICY_SPEC) | st.dictionaries(
    st.sampled_from(["rotateEvery", "gracePeriod", "namespaceSelector"]), JSON, max_size=3))
def test_policies_are_accepted_or_refused_naming_the_field(spec: dict[str, Any]) -> None:
    try:
        policy = parse_policy({"metadata": {"name": "p"}, "spec": spec})
    except SpecError as exc:
        assert str(exc).startswith("spec."), str(exc)
    else:
        assert policy.grace_period < policy.rotate_every
        assert policy.rotate_every.total_seconds() >= 10
