"""The CRDs in crds/ are structural, carry the contract's defaults and reject what it forbids.

Validation uses `jsonschema` against each openAPIV3Schema, the subset of OpenAPI v3 that
the API server enforces; the x-kubernetes-* keywords are checked for shape separately.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
APIKEY_CRD = CRD_DIR / "apikeys.dev_apikeys.yaml"
POLICY_CRD = CRD_DIR / "apikeys.dev_rotationpolicies.yaml"

# The keywords a structural schema may use (apiextensions.k8s.io/v1 JSONSchemaProps).
ALLOWED_KEYWORDS = {
    "type",
    "format",
    "description",
    "default",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "required",
    "properties",
    "items",
    "additionalProperties",
    "nullable",
    "title",
    "example",
    "externalDocs",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
}
ALLOWED_TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def load_crd(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as stream:
        crd: dict[str, Any] = yaml.safe_load(stream)
    return crd


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its field path, depth first."""
    yield path or ".", schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: fill absent fields that have a default."""
    if isinstance(value, dict) and schema.get("type") == "object":
        result = dict(value)
        for name, child in schema.get("properties", {}).items():
            if name not in result and "default" in child:
                result[name] = copy.deepcopy(child["default"])
            if name in result:
                result[name] = apply_defaults(child, result[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            known = set(schema.get("properties", {}))
            for name in result.keys() - known:
                result[name] = apply_defaults(extra, result[name])
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    return [
        "/".join(str(part) for part in error.absolute_path) + ": " + error.message
        for error in validator.iter_errors(obj)
    ]


def valid_apikey() -> dict[str, Any]:
    """The full example from the contract."""
    return {
        "apiVersion": "apikeys.dev/v1alpha1",
        "kind": "ApiKey",
        "metadata": {"name": "billing-client", "namespace": "payments"},
        "spec": {
            "store": "vault",
            "rotationPolicyRef": {"name": "standard-30d"},
            "key": {"length": 32, "encoding": "base62", "prefix": "bill_"},
            "secret": {
                "name": "billing-client-key",
                "currentKey": "api-key",
                "previousKey": "api-key-previous",
                "labels": {"team": "billing"},
                "annotations": {"owner": "billing@example.com"},
            },
            "scopes": ["invoices:read"],
            "deletionPolicy": "Delete",
            "restartTargets": [{"kind": "Deployment", "name": "billing-api"}],
        },
    }


def valid_policy() -> dict[str, Any]:
    return {
        "apiVersion": "apikeys.dev/v1alpha1",
        "kind": "RotationPolicy",
        "metadata": {"name": "standard-30d"},
        "spec": {
            "rotateEvery": "30d",
            "gracePeriod": "24h",
            "namespaceSelector": {"matchLabels": {"env": "prod"}},
        },
    }


def with_field(obj: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    result = copy.deepcopy(obj)
    *parents, leaf = dotted.split(".")
    node = result
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return result


@pytest.fixture(scope="module")
def apikey_schema() -> dict[str, Any]:
    return schema_of(load_crd(APIKEY_CRD))


@pytest.fixture(scope="module")
def policy_schema() -> dict[str, Any]:
    return schema_of(load_crd(POLICY_CRD))


@pytest.mark.parametrize("path", [APIKEY_CRD, POLICY_CRD], ids=lambda p: p.name)
def test_every_schema_node_is_structural(path: Path) -> None:
    schema = schema_of(load_crd(path))
    for field_path, node in walk(schema):
        unknown = set(node) - ALLOWED_KEYWORDS
        assert not unknown, f"{field_path} uses unknown keywords {unknown}"
        assert node.get("type") in ALLOWED_TYPES, f"{field_path} has no valid type"
        assert "$ref" not in node and "definitions" not in node
        if "default" in node:
            assert not errors(node, node["default"]), f"{field_path} default violates its schema"
        if node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            assert set(keys) <= set(node["items"].get("required", [])), field_path


@pytest.mark.parametrize("path", [APIKEY_CRD, POLICY_CRD], ids=lambda p: p.name)
def test_preserve_unknown_fields_is_confined_to_kopf_state(path: Path) -> None:
    schema = schema_of(load_crd(path))
    preserved = [p for p, node in walk(schema) if node.get("x-kubernetes-preserve-unknown-fields")]
    assert preserved == [".status.kopf"]
    assert schema["properties"]["metadata"] == {"type": "object"}


def test_names_scope_and_versions_follow_the_contract() -> None:
    apikey, policy = load_crd(APIKEY_CRD), load_crd(POLICY_CRD)
    assert apikey["apiVersion"] == policy["apiVersion"] == "apiextensions.k8s.io/v1"
    assert apikey["metadata"]["name"] == "apikeys.apikeys.dev"
    assert policy["metadata"]["name"] == "rotationpolicies.apikeys.dev"
    assert (apikey["spec"]["scope"], policy["spec"]["scope"]) == ("Namespaced", "Cluster")
    assert apikey["spec"]["names"]["shortNames"] == ["ak"]
    assert policy["spec"]["names"]["shortNames"] == ["rp"]
    for crd in (apikey, policy):
        assert crd["spec"]["group"] == "apikeys.dev"
        assert crd["spec"]["names"]["categories"] == ["apikeys"]
        (version,) = crd["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}


def test_printer_columns() -> None:
    def columns(path: Path) -> dict[str, str]:
        (version,) = load_crd(path)["spec"]["versions"]
        return {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}

    assert columns(APIKEY_CRD) == {
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Reason": '.status.conditions[?(@.type=="Ready")].reason',
        "Store": ".spec.store",
        "Version": ".status.currentKey.version",
        "Schedule": '.status.conditions[?(@.type=="Scheduled")].reason',
        "Next Rotation": ".status.nextRotationTime",
        "Age": ".metadata.creationTimestamp",
    }
    (version,) = load_crd(APIKEY_CRD)["spec"]["versions"]
    types = {c["name"]: c["type"] for c in version["additionalPrinterColumns"]}
    # kubectl shows a future `date` as "<invalid>"; the next rotation is always in the future.
    assert types["Next Rotation"] == "string"
    assert columns(POLICY_CRD) == {
        "Ready": '.status.conditions[?(@.type=="Ready")].status',
        "Keys": ".status.keys",
        "Rotate Every": ".spec.rotateEvery",
        "Grace": ".spec.gracePeriod",
        "Age": ".metadata.creationTimestamp",
    }


def test_an_empty_apikey_gets_the_contract_defaults(apikey_schema: dict[str, Any]) -> None:
    obj = {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey", "metadata": {"name": "a"}}
    spec = apply_defaults(apikey_schema, obj)["spec"]
    assert spec == {
        "store": "kubernetes",
        "key": {"length": 32, "encoding": "base62"},
        "secret": {"currentKey": "api-key", "previousKey": "api-key-previous"},
        "deletionPolicy": "Delete",
    }
    assert not errors(apikey_schema, apply_defaults(apikey_schema, obj))


def test_a_policy_gets_the_default_grace_period(policy_schema: dict[str, Any]) -> None:
    obj = {"kind": "RotationPolicy", "metadata": {"name": "p"}, "spec": {"rotateEvery": "30d"}}
    assert apply_defaults(policy_schema, obj)["spec"]["gracePeriod"] == "24h"


def test_the_contract_examples_are_valid(
    apikey_schema: dict[str, Any], policy_schema: dict[str, Any]
) -> None:
    assert errors(apikey_schema, valid_apikey()) == []
    assert errors(policy_schema, valid_policy()) == []


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("spec.key.length", 16),
        ("spec.key.length", 128),
        ("spec.key.encoding", "hex"),
        ("spec.key.encoding", "base64url"),
        ("spec.key.prefix", "a"),
        ("spec.key.prefix", "sk_live_0123456"),
        ("spec.deletionPolicy", "Retain"),
        (
            "spec.restartTargets",
            [{"kind": "StatefulSet", "name": "db"}, {"kind": "DaemonSet", "name": "agent.v2"}],
        ),
        ("spec.scopes", ["invoices:read", "reports/*", "admin.write"]),
        (
            "spec.generator",
            {"webhook": {"name": "payments-vendor"}},
        ),
        ("spec.secret.currentKey", "API_KEY.v1"),
    ],
)
def test_valid_variants_pass(apikey_schema: dict[str, Any], dotted: str, value: Any) -> None:
    assert errors(apikey_schema, with_field(valid_apikey(), dotted, value)) == []


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("spec.key.length", 8),
        ("spec.key.length", 129),
        ("spec.key.length", "32"),
        ("spec.key.encoding", "rot13"),
        ("spec.key.prefix", "Bill_"),
        ("spec.key.prefix", "1bill"),
        ("spec.key.prefix", "bill-"),
        ("spec.key.prefix", "a_prefix_far_too_long"),
        ("spec.deletionPolicy", "Orphan"),
        ("spec.restartTargets", [{"kind": "CronJob", "name": "nightly"}]),
        ("spec.restartTargets", [{"kind": "Deployment", "name": "Billing_API"}]),
        ("spec.restartTargets", [{"kind": "Deployment"}]),
        ("spec.restartTargets", [{"kind": "Deployment", "name": f"d{i}"} for i in range(17)]),
        ("spec.scopes", [f"s{i}" for i in range(33)]),
        ("spec.scopes", ["has space"]),
        ("spec.secret.name", "Not-A-DNS-Name"),
        ("spec.secret.currentKey", "a/b"),
        ("spec.secret.previousKey", ""),
        ("spec.store", "Vault Store"),
        ("spec.rotationPolicyRef", {}),
        ("spec.generator", {"webhook": {}}),
        ("spec.generator", {"webhook": {"name": "Vendor X"}}),
    ],
)
def test_invalid_apikeys_fail(apikey_schema: dict[str, Any], dotted: str, value: Any) -> None:
    assert errors(apikey_schema, with_field(valid_apikey(), dotted, value))


@pytest.mark.parametrize(
    "duration", ["30d", "24h", "1h30m", "90s", "1.5h", "500ms", "10µs", "2d12h"]
)
def test_go_style_durations_with_days_pass(policy_schema: dict[str, Any], duration: str) -> None:
    assert errors(policy_schema, with_field(valid_policy(), "spec.rotateEvery", duration)) == []
    assert errors(policy_schema, with_field(valid_policy(), "spec.gracePeriod", duration)) == []


@pytest.mark.parametrize(
    "duration", ["30", "30 days", "1y", "2w", "-1h", "h", "", "1h 30m", "P30D"]
)
def test_bad_durations_fail(policy_schema: dict[str, Any], duration: str) -> None:
    assert errors(policy_schema, with_field(valid_policy(), "spec.rotateEvery", duration))
    assert errors(policy_schema, with_field(valid_policy(), "spec.gracePeriod", duration))


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        ("spec", {}),
        ("spec.namespaceSelector", {"matchExpressions": [{"key": "env", "operator": "Like"}]}),
        ("spec.namespaceSelector", {"matchLabels": {"env": 1}}),
    ],
)
def test_invalid_policies_fail(policy_schema: dict[str, Any], dotted: str, value: Any) -> None:
    assert errors(policy_schema, with_field(valid_policy(), dotted, value))


def test_status_accepts_what_the_contract_describes(apikey_schema: dict[str, Any]) -> None:
    status = {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Provisioned",
                "message": "key v4 ready",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 3,
            },
            {
                "type": "Stalled",
                "status": "False",
                "reason": "Reconciled",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            },
        ],
        "currentKey": {
            "version": 4,
            "fingerprint": "sha256:1f2e3d4c5b6a",
            "createdAt": "2026-01-01T00:00:00Z",
        },
        "previousKey": {
            "version": 3,
            "fingerprint": "sha256:0a1b2c3d4e5f",
            "validUntil": "2026-01-02T00:00:00Z",
        },
        "lastRotationTime": "2026-01-01T00:00:00Z",
        "nextRotationTime": "2026-01-31T00:00:00Z",
        "storeRef": "vault:secret/apikeys/payments/billing-client",
        "lastHandledRotate": "2026-01-01",
        "lastHandledRevoke": "incident-42",
        "kopf": {"progress": {"create": {"retries": 0}}},
    }
    assert errors(apikey_schema, {**valid_apikey(), "status": status}) == []


@pytest.mark.parametrize(
    ("dotted", "value"),
    [
        (
            "status.conditions",
            [
                {
                    "type": "Ready",
                    "status": "Yes",
                    "reason": "Provisioned",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        ),
        ("status.conditions", [{"type": "Ready", "status": "True"}]),
        ("status.currentKey", {"version": 1, "fingerprint": "ab12"}),
        ("status.nextRotationTime", "tomorrow"),
    ],
)
def test_malformed_status_fails(apikey_schema: dict[str, Any], dotted: str, value: Any) -> None:
    assert errors(apikey_schema, with_field(valid_apikey(), dotted, value))


@pytest.mark.parametrize("path", [APIKEY_CRD, POLICY_CRD], ids=lambda p: p.name)
def test_the_crd_objects_are_valid_for_the_api_server(path: Path) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(load_crd(path), "1.33.0", strict=True)
