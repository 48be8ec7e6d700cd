"""Hypothesis strategies for values that satisfy a CRD's structural schema.

hypothesis-jsonschema cannot build object strategies with the Hypothesis in this
environment (it relies on a private API that changed), so this module covers the
subset of OpenAPI v3 that structural CRD schemas use: objects with properties,
required and additionalProperties, strings with enum/pattern/length bounds,
integers with bounds, booleans and arrays with item bounds. Kubernetes
extensions (`x-kubernetes-*`) are ignored except `list-type: set` (unique items).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

_MAX_ARRAY = 6
_MAX_MAP = 4


def from_crd_schema(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """A strategy for values valid under `schema` (the subset described above)."""
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    kind = schema.get("type")
    if kind == "object":
        return _object(schema)
    if kind == "array":
        items = from_crd_schema(schema.get("items") or {"type": "string"})
        max_size = min(int(schema.get("maxItems", _MAX_ARRAY)), _MAX_ARRAY)
        unique = schema.get("x-kubernetes-list-type") == "set"
        return st.lists(items, min_size=int(schema.get("minItems", 0)), max_size=max_size,
                        unique_by=(lambda v: repr(v)) if unique else None)
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "boolean":
        return st.booleans()
    return _string(schema)


def _string(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    min_size = int(schema.get("minLength", 0))
    max_size = int(schema.get("maxLength", 64))
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: min_size <= len(s) <= max_size)
    return st.text(min_size=min_size, max_size=min(max_size, 64))


def _object(schema: Mapping[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties: Mapping[str, Any] = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    if not properties:
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            max_size = min(int(schema.get("maxProperties", _MAX_MAP)), _MAX_MAP)
            keys = st.from_regex(r"[a-z][a-z0-9]{0,11}", fullmatch=True)
            return st.dictionaries(keys, from_crd_schema(extra), max_size=max_size)
        return st.just({})
    return st.fixed_dictionaries(
        {k: from_crd_schema(v) for k, v in properties.items() if k in required},
        optional={k: from_crd_schema(v) for k, v in properties.items() if k not in required},
    )
