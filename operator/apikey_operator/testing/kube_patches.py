"""The patch formats of the Kubernetes API: JSON merge patch, JSON patch, strategic merge patch."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


class PatchError(ValueError):
    """A patch that cannot be applied; ``test_failed`` marks a failed JSON-patch ``test`` op."""

    def __init__(self, message: str, *, test_failed: bool = False) -> None:
        super().__init__(message)
        self.test_failed = test_failed


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch and return the result; the inputs stay untouched.

    The result shares the subtrees that the patch does not touch with ``target``.
    """
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# The object lists that the built-in types merge by a key (their ``patchMergeKey``), as far as
# the workloads, Secrets and metadata this project touches go.
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "ports": "containerPort",
    "imagePullSecrets": "name", "ownerReferences": "uid", "conditions": "type",
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch: a merge patch where lists of :data:`MERGE_KEYS` merge
    item by item, ``$patch: delete|replace`` work and ``$deleteFromPrimitiveList`` removes.

    Other lists are replaced; ``$retainKeys`` and ``$setElementOrder`` are ignored (the merged
    list keeps the existing order, new items last). Untouched subtrees are shared with
    ``target``.
    """
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    clean = {k: v for k, v in patch.items() if not k.startswith("$")}
    if directive == "replace":
        return copy.deepcopy(clean)
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        prefix = "$deleteFromPrimitiveList/"
        if key.startswith(prefix) and isinstance(value, list):
            field = key[len(prefix):]
            if isinstance(result.get(field), list):
                result[field] = [item for item in result[field] if item not in value]
    for key, value in clean.items():
        if value is None:
            result.pop(key, None)
            continue
        if key in MERGE_KEYS and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(result[key], value, MERGE_KEYS[key])
            continue
        merged = strategic_merge_patch(result.get(key), value)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    return result


def _merge_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    if not all(isinstance(item, Mapping) and merge_key in item for item in [*current, *patch]):
        return copy.deepcopy(patch)
    merged = list(current)
    for item in patch:
        index = next((i for i, old in enumerate(merged)
                      if old[merge_key] == item[merge_key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer: {pointer!r}")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _parent(doc: Any, pointer: str) -> tuple[Any, str]:
    tokens = _tokens(pointer)
    if not tokens:
        raise PatchError("the whole document cannot be the target of this operation")
    current = doc
    for token in tokens[:-1]:
        current = _child(current, token, pointer)
    return current, tokens[-1]


def _child(container: Any, token: str, pointer: str) -> Any:
    if isinstance(container, dict):
        if token not in container:
            raise PatchError(f"path not found: {pointer}")
        return container[token]
    if isinstance(container, list):
        index = _index(container, token, pointer, allow_end=False)
        return container[index]
    raise PatchError(f"path not found: {pointer}")


def _index(container: list[Any], token: str, pointer: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit():
        raise PatchError(f"invalid array index in {pointer}")
    index = int(token)
    if index > len(container) or (index == len(container) and not allow_end):
        raise PatchError(f"array index out of range in {pointer}")
    return index


def _get(doc: Any, pointer: str) -> Any:
    current = doc
    for token in _tokens(pointer):
        current = _child(current, token, pointer)
    return current


def _add(doc: Any, pointer: str, value: Any) -> Any:
    if pointer == "":
        return value
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, pointer, allow_end=True), value)
    else:
        raise PatchError(f"path not found: {pointer}")
    return doc


def _remove(doc: Any, pointer: str) -> Any:
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"path not found: {pointer}")
        return parent.pop(token)
    if isinstance(parent, list):
        return parent.pop(_index(parent, token, pointer, allow_end=False))
    raise PatchError(f"path not found: {pointer}")


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch and return the result; the input stays untouched."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, Mapping) or "op" not in op or "path" not in op:
            raise PatchError("each JSON patch operation needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            if path == "":
                doc = copy.deepcopy(op.get("value"))
            else:
                _remove(doc, path)
                doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        elif kind == "test":
            try:
                actual = _get(doc, path)
            except PatchError:
                actual = None
            if actual != op.get("value"):
                raise PatchError(f"testing value {path} failed", test_failed=True)
        else:
            raise PatchError(f"unknown JSON patch operation: {kind!r}")
    return doc
