"""The pure building blocks of the emulator: schemas, selectors, patches, printer columns."""

from __future__ import annotations

from typing import Any

import pytest

from apikey_operator.testing import kube_patches, kube_resources, kube_schema, kube_selectors

pytestmark = pytest.mark.unit

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "default": {},
            "required": ["mode"],
            "properties": {
                "mode": {"type": "string", "enum": ["a", "b"]},
                "size": {"type": "integer", "default": 3, "minimum": 1, "maximum": 9},
                "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                "when": {"type": "string", "format": "date-time"},
                "tags": {"type": "array", "x-kubernetes-list-type": "set", "maxItems": 3,
                         "items": {"type": "string"}},
                "items": {"type": "array", "x-kubernetes-list-type": "map",
                          "x-kubernetes-list-map-keys": ["k"],
                          "items": {"type": "object", "required": ["k"],
                                    "properties": {"k": {"type": "string"},
                                                   "v": {"type": "integer", "default": 1}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    },
}


def errors_of(value: Any) -> dict[str, str]:
    return {e.field: e.detail for e in kube_schema.validate(SCHEMA, value)}


@pytest.mark.parametrize(("spec", "field", "fragment"), [
    ({"mode": "c"}, "spec.mode", 'Unsupported value: "c": supported values: "a", "b"'),
    ({"mode": "a", "size": 0}, "spec.size", "should be greater than or equal to 1"),
    ({"mode": "a", "size": 10}, "spec.size", "should be less than or equal to 9"),
    ({"mode": "a", "size": "3"}, "spec.size", "must be of type integer"),
    ({"mode": "a", "size": True}, "spec.size", "must be of type integer"),
    ({"mode": "a", "name": "Abc"}, "spec.name", "should match '^[a-z]+$'"),
    ({"mode": "a", "name": "abcdef"}, "spec.name", "Too long: may not be more than 5"),
    ({"mode": "a", "when": "yesterday"}, "spec.when", "must be of type date-time"),
    ({"mode": "a", "tags": ["x", "x"]}, "spec.tags[1]", 'Duplicate value: "x"'),
    ({"mode": "a", "tags": ["a", "b", "c", "d"]}, "spec.tags", "must have at most 3 items"),
    ({"mode": "a", "items": [{"k": "x"}, {"k": "x"}]}, "spec.items[1]", "Duplicate value"),
    ({"mode": "a", "items": [{"v": 2}]}, "spec.items[0].k", "Required value"),
    ({"mode": "a", "labels": {"x": 1}}, "spec.labels.x", "must be of type string"),
    ({}, "spec.mode", "Required value"),
], ids=lambda v: str(v)[:40])
def test_schema_violations_name_the_field(spec: dict[str, Any], field: str,
                                          fragment: str) -> None:
    found = errors_of({"spec": spec})
    assert field in found, found
    assert fragment in found[field]


def test_valid_objects_have_no_errors() -> None:
    assert errors_of({"spec": {"mode": "a", "size": 4, "when": "2026-01-01T00:00:00Z",
                               "items": [{"k": "x"}, {"k": "y"}], "free": {"any": [1]}}}) == {}


def test_defaults_fill_absent_fields_recursively_but_keep_given_ones() -> None:
    obj: dict[str, Any] = {"apiVersion": "x", "items": []}
    kube_schema.apply_defaults(SCHEMA, obj)
    assert obj["spec"] == {"size": 3}
    given: dict[str, Any] = {"spec": {"size": 5, "items": [{"k": "a"}, {"k": "b", "v": 7}]}}
    kube_schema.apply_defaults(SCHEMA, given)
    assert given["spec"]["size"] == 5
    assert given["spec"]["items"] == [{"k": "a", "v": 1}, {"k": "b", "v": 7}]


def test_pruning_drops_unknown_fields_except_preserved_and_root_metadata() -> None:
    obj: dict[str, Any] = {"apiVersion": "v", "kind": "K", "metadata": {"name": "n", "x": 1},
                           "junk": 1, "spec": {"mode": "a", "extra": 1,
                                               "free": {"kept": {"deep": 1}},
                                               "labels": {"any": "thing"}}}
    kube_schema.prune(SCHEMA, obj, root=True)
    assert obj == {"apiVersion": "v", "kind": "K", "metadata": {"name": "n", "x": 1},
                   "spec": {"mode": "a", "free": {"kept": {"deep": 1}},
                            "labels": {"any": "thing"}}}


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "c"}, False),
    ("a!=b", {}, True),
    ("a in (x, y)", {"a": "y"}, True),
    ("a notin (x,y),b", {"a": "z", "b": ""}, True),
    ("a notin (x,y),b", {"a": "z"}, False),
    ("!a", {"b": "1"}, True),
    ("a", {}, False),
    ("n>3", {"n": "5"}, True),
    ("n<3", {"n": "5"}, False),
])
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    matcher = kube_selectors.label_matcher(selector)
    assert matcher is not None
    assert matcher({"metadata": {"labels": labels}}) is expected


def test_bad_label_selector_is_rejected() -> None:
    with pytest.raises(kube_selectors.SelectorError):
        kube_selectors.label_matcher("a in x")


def test_structured_label_selector() -> None:
    matcher = kube_selectors.label_selector_from_dict(
        {"matchLabels": {"env": "prod"},
         "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]})
    assert matcher({"metadata": {"labels": {"env": "prod", "tier": "a"}}})
    assert not matcher({"metadata": {"labels": {"env": "prod"}}})


def test_field_selectors_on_nested_fields() -> None:
    matcher = kube_selectors.field_matcher(
        "involvedObject.kind=ApiKey,involvedObject.name==k,type!=Warning")
    assert matcher is not None
    event = {"involvedObject": {"kind": "ApiKey", "name": "k"}, "type": "Normal"}
    assert matcher(event)
    assert not matcher({**event, "type": "Warning"})
    assert kube_selectors.field_matcher("") is None


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "d": [1, 2], "e": 1}
    assert kube_patches.merge_patch(target, {"a": {"b": None, "x": 3}, "d": [3], "e": None}) == {
        "a": {"c": 2, "x": 3}, "d": [3]}
    assert target == {"a": {"b": 1, "c": 2}, "d": [1, 2], "e": 1}


def test_strategic_merge_patch_directives() -> None:
    target = {"a": {"b": 1, "c": 2}, "d": {"x": 1}}
    patched = kube_patches.strategic_merge_patch(
        target, {"a": {"$patch": "replace", "z": 9}, "d": {"$patch": "delete"}})
    assert patched == {"a": {"z": 9}}


def test_json_patch_operations_and_failed_test() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}, "m~/": 0}
    result = kube_patches.json_patch(doc, [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "add", "path": "/a/0", "value": 0},
        {"op": "remove", "path": "/b/c"},
        {"op": "replace", "path": "/m~0~1", "value": 1},
        {"op": "copy", "from": "/a/0", "path": "/b/z"},
        {"op": "move", "from": "/b/z", "path": "/y"},
        {"op": "test", "path": "/y", "value": 0},
    ])
    assert result == {"a": [0, 1, 2, 3], "b": {}, "m~/": 1, "y": 0}
    with pytest.raises(kube_patches.PatchError) as failed:
        kube_patches.json_patch(doc, [{"op": "test", "path": "/b/c", "value": 2}])
    assert failed.value.test_failed
    with pytest.raises(kube_patches.PatchError) as missing:
        kube_patches.json_patch(doc, [{"op": "remove", "path": "/nope"}])
    assert not missing.value.test_failed


def test_printer_column_json_paths() -> None:
    obj = {"status": {"conditions": [{"type": "Stalled", "status": "True"},
                                     {"type": "Ready", "status": "False", "reason": "X"}]},
           "spec": {"list": [1, 2]}}
    assert kube_resources.jsonpath_values(
        obj, '.status.conditions[?(@.type=="Ready")].status') == ["False"]
    assert kube_resources.jsonpath_values(obj, ".spec.list[1]") == [2]
    assert kube_resources.jsonpath_values(obj, ".spec.list[*]") == [1, 2]
    assert kube_resources.jsonpath_values(obj, ".spec.absent") == []


def test_tables_have_name_and_printer_columns() -> None:
    crd = {"spec": {"group": "g.dev", "scope": "Namespaced",
                    "names": {"kind": "Thing", "plural": "things"},
                    "versions": [{"name": "v1", "served": True, "additionalPrinterColumns": [
                        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"}]}]}}
    (thing,) = kube_resources.resources_from_crd(crd)
    table = kube_resources.to_table(thing, [{"metadata": {"name": "t"}, "spec": {"mode": "a"}}],
                                    resource_version="5", include_object="Metadata")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Mode"]
    assert table["rows"][0]["cells"] == ["t", "a"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_unknown_fields_are_reported_with_their_paths() -> None:
    obj = {"apiVersion": "v", "kind": "K", "metadata": {"anything": 1}, "top": 1,
           "spec": {"mode": "a", "typo": 1, "items": [{"k": "x", "w": 2}],
                    "free": {"kept": 1}, "labels": {"ok": "1"}}}
    assert kube_schema.unknown_fields(SCHEMA, obj, root=True) == [
        "top", "spec.typo", "spec.items[0].w"]


def test_strategic_merge_patch_merges_keyed_lists() -> None:
    target = {"spec": {"containers": [{"name": "app", "image": "a:1", "ports": [
        {"containerPort": 80}]}, {"name": "side", "image": "s:1"}]},
        "metadata": {"finalizers": ["x", "y"]}}
    patched = kube_patches.strategic_merge_patch(target, {
        "spec": {"containers": [{"name": "app", "image": "a:2"},
                                {"name": "side", "$patch": "delete"},
                                {"name": "new", "image": "n:1"}]},
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}})
    assert patched["spec"]["containers"] == [
        {"name": "app", "image": "a:2", "ports": [{"containerPort": 80}]},
        {"name": "new", "image": "n:1"}]
    assert patched["metadata"]["finalizers"] == ["y"]
    assert target["spec"]["containers"][0]["image"] == "a:1"
