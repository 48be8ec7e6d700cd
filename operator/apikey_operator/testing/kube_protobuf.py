"""Decoding of the few protobuf request bodies that kubectl's imperative commands send.

``kubectl create namespace|secret|configmap`` post protobuf rather than JSON. The emulator
stores JSON, so these three kinds are decoded here (metadata names, labels, annotations,
finalizers and the data maps); anything else is refused with 415 by the caller.
"""

from __future__ import annotations

import base64
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf envelope of a supported kind."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a message; varints as int, the rest as bytes."""
    pos = 0
    fields: list[tuple[int, int | bytes]] = []
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            fields.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            fields.append((number, data[pos:pos + length]))
            pos += length
        elif wire == 1:
            fields.append((number, data[pos:pos + 8]))
            pos += 8
        elif wire == 5:
            fields.append((number, data[pos:pos + 4]))
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return fields


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a length-delimited field")
    return value.decode("utf-8")


def _entry(value: int | bytes) -> tuple[str, bytes]:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a map entry")
    key, raw = "", b""
    for number, item in _fields(value):
        if number == 1:
            key = _text(item)
        elif number == 2 and isinstance(item, bytes):
            raw = item
    return key, raw


def _metadata(data: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace"}
    for number, value in _fields(data):
        if number in names:
            if text := _text(value):  # proto2 writes unset strings as empty ones
                meta[names[number]] = text
        elif number in (11, 12):
            key, raw = _entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = raw.decode()
        elif number == 14:
            meta.setdefault("finalizers", []).append(_text(value))
    return meta


def decode(body: bytes) -> dict[str, Any]:
    """A JSON-shaped object from a protobuf-encoded Namespace, Secret or ConfigMap."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf envelope")
    api_version = kind = ""
    raw = b""
    for number, value in _fields(body[len(MAGIC):]):
        if number == 1 and isinstance(value, bytes):
            for sub_number, sub_value in _fields(value):
                if sub_number == 1:
                    api_version = _text(sub_value)
                elif sub_number == 2:
                    kind = _text(sub_value)
        elif number == 2 and isinstance(value, bytes):
            raw = value
    if (api_version, kind) not in (("v1", "Namespace"), ("v1", "Secret"), ("v1", "ConfigMap")):
        raise ProtobufError(f"protobuf bodies of {api_version} {kind} are not supported")
    obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {}}
    for number, value in _fields(raw):
        if number == 1 and isinstance(value, bytes):
            obj["metadata"] = _metadata(value)
        elif kind == "Secret" and number == 2:
            key, data = _entry(value)
            obj.setdefault("data", {})[key] = base64.b64encode(data).decode("ascii")
        elif kind == "Secret" and number == 3:
            if secret_type := _text(value):
                obj["type"] = secret_type
        elif kind == "Secret" and number == 4:
            key, data = _entry(value)
            obj.setdefault("stringData", {})[key] = data.decode("utf-8")
        elif kind == "ConfigMap" and number == 2:
            key, data = _entry(value)
            obj.setdefault("data", {})[key] = data.decode("utf-8")
        elif kind == "ConfigMap" and number == 3:
            key, data = _entry(value)
            obj.setdefault("binaryData", {})[key] = base64.b64encode(data).decode("ascii")
        elif (kind, number) in (("Secret", 5), ("ConfigMap", 4)):
            obj["immutable"] = bool(value)
    return obj
