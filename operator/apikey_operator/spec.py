"""Validated, typed views of ApiKey and RotationPolicy objects (pure).

The CRD schema exists, but objects can reach the operator without it (an older
CRD, a server that skipped validation), so every field the operator acts on is
checked and bounded here. Errors name the field, the way the API server does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from apikey_operator.durations import DurationError, format_duration, parse_duration
from apikey_operator.keys import (
    DEFAULT_LENGTH,
    ENCODINGS,
    MAX_LENGTH,
    MIN_LENGTH,
    PREFIX_PATTERN,
    Encoding,
    KeyFormat,
)

GROUP = "apikeys.dev"
VERSION = "v1alpha1"
ANNOTATION_PREFIX = f"{GROUP}/"
ROTATE_ANNOTATION = f"{GROUP}/rotate"
REVOKE_ANNOTATION = f"{GROUP}/revoke"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "apikey-operator"

DEFAULT_GRACE = timedelta(hours=24)
MIN_ROTATE_EVERY = timedelta(seconds=10)
RESTARTABLE_KINDS = ("Deployment", "StatefulSet", "DaemonSet")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# A Secret data key as kube-apiserver validates one (IsConfigMapKey): the alphabet, at most
# 253 characters, and neither "." nor anything starting with "..", which the kubelet's atomic
# volume writer reserves (..data, ..2026_...).
_DATA_KEY = re.compile(r"^(?!\.\.)(?!\.$)[-._a-zA-Z0-9]{1,253}$")
_STORE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SCOPE = re.compile(r"^[A-Za-z0-9:._/*-]{1,128}$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
MAX_SCOPES = 32
MAX_RESTART_TARGETS = 16
MAX_EXTRA_METADATA = 32
MAX_ANNOTATION_VALUE = 4096


class SpecError(ValueError):
    """A field the operator cannot act on; the message names the field."""


@dataclass(frozen=True)
class RestartTarget:
    kind: str
    name: str


@dataclass(frozen=True)
class ApiKeySpec:
    store: str
    policy_name: str | None
    key_format: KeyFormat
    secret_name: str
    current_key: str
    previous_key: str
    secret_labels: Mapping[str, str] = field(default_factory=dict)
    secret_annotations: Mapping[str, str] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    deletion_policy: Literal["Delete", "Retain"] = "Delete"
    restart_targets: tuple[RestartTarget, ...] = ()
    generator: str | None = None  # a webhook generator configured by the platform team


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class NamespaceSelector:
    """A parsed metav1.LabelSelector; the empty selector admits every namespace."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    requirements: tuple[LabelRequirement, ...] = ()

    def admits(self, labels: Mapping[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.requirements:
            present = req.key in labels
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
        return True


@dataclass(frozen=True)
class EarlyExpiry:
    """End a grace before gracePeriod once the previous key is provably unused: no consumer
    verified it for `unused_for`, and never before `minimum_grace` after the rotation."""

    unused_for: timedelta
    minimum_grace: timedelta


@dataclass(frozen=True)
class RotationPolicy:
    name: str
    rotate_every: timedelta
    grace_period: timedelta
    namespace_selector: NamespaceSelector | None
    # A key older than this is non-compliant (reported, never rotated early because of it).
    max_key_age: timedelta | None = None
    early_expiry: EarlyExpiry | None = None

    def summary(self) -> str:
        """One line for the policy's Ready condition."""
        text = (f"rotates every {format_duration(self.rotate_every)}; the previous key stays "
                f"valid for {format_duration(self.grace_period)}")
        if self.max_key_age is not None:
            text += f"; keys older than {format_duration(self.max_key_age)} are reported"
        if self.early_expiry is not None:
            text += (f"; the grace ends early once the previous key is unused for "
                     f"{format_duration(self.early_expiry.unused_for)} (not before "
                     f"{format_duration(self.early_expiry.minimum_grace)})")
        return text


def _mapping(value: object, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{path} must be an object")
    return value


def _string(value: object, path: str, pattern: re.Pattern[str], hint: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
        raise SpecError(f"{path} {shown} is invalid: {hint}")
    return value


def _string_map(value: object, path: str, *, labels: bool) -> dict[str, str]:
    items = _mapping(value, path)
    if len(items) > MAX_EXTRA_METADATA:
        raise SpecError(f"{path} has {len(items)} entries; at most {MAX_EXTRA_METADATA} allowed")
    result: dict[str, str] = {}
    for key, val in items.items():
        if not isinstance(key, str) or not _valid_qualified_name(key):
            raise SpecError(f"{path} key {str(key)[:80]!r} is not a valid name")
        if key.startswith(ANNOTATION_PREFIX) or key == MANAGED_BY_LABEL:
            raise SpecError(f"{path}[{key}] is reserved for the operator")
        if not isinstance(val, str):
            raise SpecError(f"{path}[{key}] must be a string")
        if labels and not _LABEL_VALUE.fullmatch(val):
            raise SpecError(f"{path}[{key}] is not a valid label value")
        if len(val) > MAX_ANNOTATION_VALUE:
            raise SpecError(f"{path}[{key}] is longer than {MAX_ANNOTATION_VALUE} characters")
        result[key] = val
    return result


def _valid_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return bool(_LABEL_NAME.fullmatch(name))


def parse_apikey(body: Mapping[str, Any]) -> ApiKeySpec:
    """Validate an ApiKey object's spec; raise SpecError naming the first bad field."""
    metadata = _mapping(body.get("metadata"), "metadata")
    name = _string(metadata.get("name"), "metadata.name", _DNS_SUBDOMAIN, "not a DNS name")
    spec = _mapping(body.get("spec"), "spec")

    store = _string(
        spec.get("store", "kubernetes"), "spec.store", _STORE_NAME, "not a store name"
    )
    policy_ref = _mapping(spec.get("rotationPolicyRef"), "spec.rotationPolicyRef")
    policy_name = None
    if policy_ref:
        policy_name = _string(
            policy_ref.get("name"), "spec.rotationPolicyRef.name", _DNS_SUBDOMAIN, "not a DNS name"
        )

    key = _mapping(spec.get("key"), "spec.key")
    length = key.get("length", DEFAULT_LENGTH)
    if isinstance(length, bool) or not isinstance(length, int):
        raise SpecError("spec.key.length must be an integer")
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise SpecError(f"spec.key.length {length} is out of range {MIN_LENGTH}..{MAX_LENGTH}")
    encoding = key.get("encoding", "base62")
    if encoding not in ENCODINGS:
        raise SpecError(
            f"spec.key.encoding {str(encoding)[:40]!r} is not one of {', '.join(ENCODINGS)}"
        )
    prefix = key.get("prefix") or ""
    if prefix:
        prefix = _string(
            prefix, "spec.key.prefix", PREFIX_PATTERN, "must match ^[a-z][a-z0-9_]{0,15}$"
        )
    encoding_typed: Encoding = encoding
    key_format = KeyFormat(length=length, encoding=encoding_typed, prefix=prefix)

    secret = _mapping(spec.get("secret"), "spec.secret")
    secret_name = _string(
        secret.get("name", name), "spec.secret.name", _DNS_SUBDOMAIN, "not a DNS name"
    )
    current_key = _string(
        secret.get("currentKey", "api-key"), "spec.secret.currentKey", _DATA_KEY, "not a data key"
    )
    previous_key = _string(
        secret.get("previousKey", "api-key-previous"),
        "spec.secret.previousKey",
        _DATA_KEY,
        "not a data key",
    )
    if current_key == previous_key:
        raise SpecError("spec.secret.previousKey must differ from spec.secret.currentKey")

    scopes_raw = spec.get("scopes") or []
    if not isinstance(scopes_raw, Sequence) or isinstance(scopes_raw, str):
        raise SpecError("spec.scopes must be a list of strings")
    if len(scopes_raw) > MAX_SCOPES:
        raise SpecError(f"spec.scopes has {len(scopes_raw)} entries; at most {MAX_SCOPES} allowed")
    scopes = tuple(
        _string(s, f"spec.scopes[{i}]", _SCOPE, "use letters, digits and :._/*-")
        for i, s in enumerate(scopes_raw)
    )

    deletion = spec.get("deletionPolicy", "Delete")
    if deletion not in ("Delete", "Retain"):
        raise SpecError(f"spec.deletionPolicy {str(deletion)[:40]!r} is not Delete or Retain")

    targets_raw = spec.get("restartTargets") or []
    if not isinstance(targets_raw, Sequence) or isinstance(targets_raw, str):
        raise SpecError("spec.restartTargets must be a list")
    if len(targets_raw) > MAX_RESTART_TARGETS:
        raise SpecError(f"spec.restartTargets has more than {MAX_RESTART_TARGETS} entries")
    targets = []
    for i, raw in enumerate(targets_raw):
        entry = _mapping(raw, f"spec.restartTargets[{i}]")
        kind = entry.get("kind")
        if kind not in RESTARTABLE_KINDS:
            raise SpecError(
                f"spec.restartTargets[{i}].kind {str(kind)[:40]!r} is not one of "
                + ", ".join(RESTARTABLE_KINDS)
            )
        target_name = _string(
            entry.get("name"), f"spec.restartTargets[{i}].name", _DNS_SUBDOMAIN, "not a DNS name"
        )
        targets.append(RestartTarget(kind=kind, name=target_name))

    generator_name = _parse_generator(spec.get("generator"))

    return ApiKeySpec(
        store=store,
        policy_name=policy_name,
        key_format=key_format,
        secret_name=secret_name,
        current_key=current_key,
        previous_key=previous_key,
        secret_labels=_string_map(secret.get("labels"), "spec.secret.labels", labels=True),
        secret_annotations=_string_map(
            secret.get("annotations"), "spec.secret.annotations", labels=False
        ),
        scopes=scopes,
        deletion_policy=deletion,
        restart_targets=tuple(targets),
        generator=generator_name,
    )


def _parse_generator(value: object) -> str | None:
    """`spec.generator.webhook.name`: a generator from the operator's config, never a URL.

    Tenants name a generator the platform team configured; they cannot point the
    operator (and its vendor credentials) at an endpoint of their choosing.
    """
    generator = _mapping(value, "spec.generator")
    if not generator:
        return None
    unknown = set(generator) - {"webhook"}
    if unknown:
        raise SpecError(f"spec.generator has unknown field(s) {', '.join(sorted(unknown))[:80]}")
    webhook = _mapping(generator.get("webhook"), "spec.generator.webhook")
    return _string(webhook.get("name"), "spec.generator.webhook.name", _STORE_NAME,
                   "not a generator name")


def parse_policy(body: Mapping[str, Any]) -> RotationPolicy:
    """Validate a RotationPolicy; raise SpecError naming the first bad field."""
    metadata = _mapping(body.get("metadata"), "metadata")
    name = str(metadata.get("name", ""))[:253]
    spec = _mapping(body.get("spec"), "spec")
    try:
        rotate_every = parse_duration(spec.get("rotateEvery"))
    except DurationError as exc:
        raise SpecError(f"spec.rotateEvery {exc}") from None
    try:
        grace = parse_duration(spec.get("gracePeriod", "24h"))
    except DurationError as exc:
        raise SpecError(f"spec.gracePeriod {exc}") from None
    if rotate_every < MIN_ROTATE_EVERY:
        raise SpecError(
            f"spec.rotateEvery {format_duration(rotate_every)} is shorter than the minimum 10s"
        )
    if grace >= rotate_every:
        raise SpecError(
            f"spec.gracePeriod {format_duration(grace)} is not shorter than "
            f"spec.rotateEvery {format_duration(rotate_every)}"
        )
    max_key_age = None
    if spec.get("maxKeyAge") is not None:
        try:
            max_key_age = parse_duration(spec.get("maxKeyAge"))
        except DurationError as exc:
            raise SpecError(f"spec.maxKeyAge {exc}") from None
        # Shorter than rotateEvery is odd but not invalid: it reports, it never stalls a key.
    selector = None
    if spec.get("namespaceSelector") is not None:
        selector = parse_selector(spec.get("namespaceSelector"), "spec.namespaceSelector")
    early = None
    if spec.get("earlyExpiry") is not None:
        early = parse_early_expiry(spec.get("earlyExpiry"), grace)
    return RotationPolicy(
        name=name, rotate_every=rotate_every, grace_period=grace, namespace_selector=selector,
        max_key_age=max_key_age, early_expiry=early,
    )


MIN_UNUSED_FOR = timedelta(seconds=1)


def parse_early_expiry(value: object, grace: timedelta) -> EarlyExpiry:
    """spec.earlyExpiry: both durations at least 1s and shorter than the grace (an early end
    that can only come after the grace's own end is a mistake worth saying so)."""
    raw = _mapping(value, "spec.earlyExpiry")
    unknown = set(raw) - {"unusedFor", "minimumGrace"}
    if unknown:
        raise SpecError(f"spec.earlyExpiry has unknown field(s) {', '.join(sorted(unknown))[:80]}")
    if raw.get("unusedFor") is None:
        raise SpecError("spec.earlyExpiry.unusedFor is required")
    durations: dict[str, timedelta] = {}
    for key in ("unusedFor", "minimumGrace"):
        if key == "minimumGrace" and raw.get(key) is None:
            # Unused for X cannot be known before X has passed: the natural floor.
            durations[key] = durations["unusedFor"]
            continue
        try:
            durations[key] = parse_duration(raw.get(key))
        except DurationError as exc:
            raise SpecError(f"spec.earlyExpiry.{key} {exc}") from None
        if durations[key] < MIN_UNUSED_FOR:
            raise SpecError(f"spec.earlyExpiry.{key} {format_duration(durations[key])} is "
                            "shorter than the minimum 1s")
        if durations[key] >= grace:
            raise SpecError(f"spec.earlyExpiry.{key} {format_duration(durations[key])} is not "
                            f"shorter than spec.gracePeriod {format_duration(grace)}")
    return EarlyExpiry(unused_for=durations["unusedFor"],
                       minimum_grace=durations["minimumGrace"])


def parse_selector(value: object, path: str) -> NamespaceSelector:
    raw = _mapping(value, path)
    match_labels = _mapping(raw.get("matchLabels"), f"{path}.matchLabels")
    labels: dict[str, str] = {}
    for key, val in match_labels.items():
        if not isinstance(key, str) or not isinstance(val, str):
            raise SpecError(f"{path}.matchLabels must map strings to strings")
        labels[key] = val
    expressions = raw.get("matchExpressions") or []
    if not isinstance(expressions, Sequence) or isinstance(expressions, str):
        raise SpecError(f"{path}.matchExpressions must be a list")
    requirements = []
    for i, item in enumerate(expressions):
        expr = _mapping(item, f"{path}.matchExpressions[{i}]")
        op: Any = expr.get("operator")
        req_key: Any = expr.get("key")
        values = expr.get("values") or []
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise SpecError(f"{path}.matchExpressions[{i}].operator {str(op)[:20]!r} is invalid")
        if not isinstance(req_key, str) or not isinstance(values, list):
            raise SpecError(f"{path}.matchExpressions[{i}] needs a key and a list of values")
        if op in ("In", "NotIn") and not values:
            raise SpecError(f"{path}.matchExpressions[{i}].values must be non-empty for {op}")
        requirements.append(
            LabelRequirement(key=req_key, operator=op, values=tuple(str(v) for v in values))
        )
    return NamespaceSelector(match_labels=labels, requirements=tuple(requirements))
