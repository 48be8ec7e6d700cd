"""Structural-schema handling of custom resources, as the Kubernetes API server does it.

Three passes over an object, each against a CRD's ``openAPIV3Schema``: defaulting
(``default`` of absent properties, recursively), pruning (unknown fields are dropped unless
``x-kubernetes-preserve-unknown-fields``) and validation (types, enums, patterns, bounds,
required fields, list-type uniqueness). Error texts follow the API server's wording, so a
test can assert on ``spec.key.length`` just as it would against a real cluster.
"""

from __future__ import annotations

import copy
import datetime
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

Schema = Mapping[str, Any]

# Root fields that the API server keeps whatever the schema says.
_ROOT_KEPT = ("apiVersion", "kind", "metadata")


@dataclass(frozen=True)
class FieldError:
    """One invalid field: its dotted path, the API's cause reason and the human detail."""

    field: str
    reason: str
    detail: str

    @property
    def message(self) -> str:
        """The text the API server puts into the Status message for this field."""
        return f"{self.field}: {self.detail}"


def apply_defaults(schema: Schema, value: Any) -> None:
    """Fill in ``default`` values of absent properties, in place, like structural defaulting."""
    if isinstance(value, dict):
        props: Mapping[str, Schema] = schema.get("properties") or {}
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            if key in props:
                apply_defaults(props[key], item)
            elif isinstance(schema.get("additionalProperties"), Mapping):
                apply_defaults(schema["additionalProperties"], item)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            apply_defaults(schema["items"], item)


def prune(schema: Schema, value: Any, *, root: bool = False) -> None:
    """Drop fields the schema does not know, in place (unknown fields never reach storage)."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            props_only: Mapping[str, Schema] = schema.get("properties") or {}
            for key, sub in props_only.items():
                if key in value:
                    prune(sub, value[key])
            return
        props: Mapping[str, Schema] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        if root:
            props = {**props, **{k: props.get(k, {"type": "object"}) for k in _ROOT_KEPT}}
        for key in list(value):
            if key in props:
                if not (root and key == "metadata"):
                    prune(props[key], value[key])
            elif isinstance(additional, Mapping):
                prune(additional, value[key])
            elif additional is True:
                continue
            elif props or additional is False or "type" in schema:
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for item in value:
            prune(schema["items"], item)


def unknown_fields(schema: Schema, value: Any, path: str = "", *,
                   root: bool = False) -> list[str]:
    """The dotted paths that :func:`prune` would drop (for ``fieldValidation=Strict``)."""
    found: list[str] = []
    if isinstance(value, dict):
        props: Mapping[str, Schema] = schema.get("properties") or {}
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub_path = _join(path, key)
            if root and key in _ROOT_KEPT:
                if key != "metadata" and key in props:
                    found.extend(unknown_fields(props[key], item, sub_path))
            elif key in props:
                found.extend(unknown_fields(props[key], item, sub_path))
            elif isinstance(additional, Mapping):
                found.extend(unknown_fields(additional, item, sub_path))
            elif not preserve and additional is not True and (
                    props or additional is False or "type" in schema):
                found.append(sub_path)
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            found.extend(unknown_fields(schema["items"], item, f"{path}[{index}]"))
    return found


def validate(schema: Schema, value: Any, path: str = "") -> list[FieldError]:
    """Return every violation of ``schema`` by ``value``; empty when the value is valid."""
    errors: list[FieldError] = []
    _validate(schema, value, path, errors)
    return errors


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":")) if not isinstance(
        value, dict | list
    ) else _go_repr(value)


def _go_repr(value: Any) -> str:
    # The API server prints composite values with Go's %v; a JSON dump is close enough to read.
    return json.dumps(value, sort_keys=True)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@lru_cache(maxsize=512)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _type_ok(expected: str, value: Any) -> bool:
    match expected:
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)
        case "string":
            return isinstance(value, str)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "boolean":
            return isinstance(value, bool)
        case _:
            return True


def _is_datetime(text: str) -> bool:
    try:
        datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return "T" in text.upper()


def _validate(schema: Schema, value: Any, path: str, errors: list[FieldError]) -> None:
    if value is None:
        if not schema.get("nullable"):
            # The server prunes nulls of non-nullable fields with defaults; without one it rejects.
            errors.append(
                FieldError(path, "FieldValueTypeInvalid",
                           f"Invalid value: \"null\": {path} in body must be of type "
                           f"{schema.get('type', 'object')}: \"null\"")
            )
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _type_ok("integer", value)):
            errors.append(FieldError(path, "FieldValueTypeInvalid",
                                     f"Invalid value: {_show(value)}: {path} in body must be of "
                                     "type integer-or-string"))
        return
    expected = schema.get("type")
    if isinstance(expected, str) and not _type_ok(expected, value):
        errors.append(FieldError(path, "FieldValueTypeInvalid",
                                 f"Invalid value: {_show(value)}: {path} in body must be of type "
                                 f"{expected}: {_show(type(value).__name__)}"))
        return
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        supported = ", ".join(_show(v) for v in enum)
        errors.append(FieldError(path, "FieldValueNotSupported",
                                 f"Unsupported value: {_show(value)}: "
                                 f"supported values: {supported}"))
    if isinstance(value, str):
        _validate_string(schema, value, path, errors)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(schema, value, path, errors)
    elif isinstance(value, list):
        _validate_array(schema, value, path, errors)
    elif isinstance(value, dict):
        _validate_object(schema, value, path, errors)


def _validate_string(schema: Schema, value: str, path: str, errors: list[FieldError]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(FieldError(path, "FieldValueTooLong",
                                 f"Too long: may not be more than {schema['maxLength']} bytes"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(FieldError(path, "FieldValueInvalid",
                                 f"Invalid value: {_show(value)}: {path} in body should be "
                                 f"at least {schema['minLength']} chars long"))
    pattern = schema.get("pattern")
    if pattern is not None and not _compiled(pattern).search(value):
        errors.append(FieldError(path, "FieldValueInvalid",
                                 f"Invalid value: {_show(value)}: {path} in body should match "
                                 f"'{pattern}'"))
    if schema.get("format") == "date-time" and not _is_datetime(value):
        errors.append(FieldError(path, "FieldValueInvalid",
                                 f"Invalid value: {_show(value)}: {path} in body must be of type "
                                 f"date-time: {_show(value)}"))


def _validate_number(schema: Schema, value: float, path: str, errors: list[FieldError]) -> None:
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") and value == low):
            errors.append(FieldError(path, "FieldValueInvalid",
                                     f"Invalid value: {_show(value)}: {path} in body should be "
                                     f"greater than or equal to {low}"))
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") and value == high):
            errors.append(FieldError(path, "FieldValueInvalid",
                                     f"Invalid value: {_show(value)}: {path} in body should be "
                                     f"less than or equal to {high}"))


def _validate_array(schema: Schema, value: list[Any], path: str, errors: list[FieldError]) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(FieldError(path, "FieldValueTooMany",
                                 f"Too many: {len(value)}: must have at most {schema['maxItems']} "
                                 "items"))
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(FieldError(path, "FieldValueInvalid",
                                 f"Invalid value: {len(value)}: {path} in body should have "
                                 f"at least {schema['minItems']} items"))
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set" or schema.get("uniqueItems"):
        seen: list[Any] = []
        for index, item in enumerate(value):
            if item in seen:
                errors.append(FieldError(f"{path}[{index}]", "FieldValueDuplicate",
                                         f"Duplicate value: {_show(item)}"))
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen_keys: list[tuple[Any, ...]] = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                ident = tuple(item.get(k) for k in keys)
                if ident in seen_keys:
                    shown = {k: item.get(k) for k in keys}
                    errors.append(FieldError(f"{path}[{index}]", "FieldValueDuplicate",
                                             f"Duplicate value: {_go_repr(shown)}"))
                seen_keys.append(ident)
    items = schema.get("items")
    if isinstance(items, Mapping):
        for index, item in enumerate(value):
            _validate(items, item, f"{path}[{index}]", errors)


def _validate_object(schema: Schema, value: dict[str, Any], path: str,
                     errors: list[FieldError]) -> None:
    for key in schema.get("required") or []:
        if key not in value:
            errors.append(FieldError(_join(path, key), "FieldValueRequired", "Required value"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(FieldError(path, "FieldValueTooMany",
                                 f"Too many: {len(value)}: must have at most "
                                 f"{schema['maxProperties']} items"))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errors.append(FieldError(path, "FieldValueInvalid",
                                 f"Invalid value: {len(value)}: {path} in body should have "
                                 f"at least {schema['minProperties']} properties"))
    props: Mapping[str, Schema] = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in props:
            if not (path == "" and key == "metadata"):
                _validate(props[key], item, _join(path, key), errors)
        elif isinstance(additional, Mapping):
            _validate(additional, item, _join(path, key), errors)
