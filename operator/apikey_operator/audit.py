"""The key inventory and its compliance findings (pure: no I/O, the clock is passed in).

`inventory_item` turns one ApiKey (plus its RotationPolicy, its namespace's labels and the
other places its key was found) into the contract's `audit -o json` item; `findings_for`
is the part the operator can export as `apikey_policy_findings{namespace,name,code}`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from apikey_operator.conditions import condition_of
from apikey_operator.durations import DurationError, parse_duration
from apikey_operator.presentation import human_duration, parse_timestamp, table

Severity = Literal["warning", "error"]
OWNER_LABEL = "apikeys.dev/owner"
# Each code once, in the order they are reported.
CODES = ("NoPolicy", "PolicyNotFound", "KeyTooOld", "Stalled", "StoreUnavailable", "NotReady",
         "SharedKey")


class PolicyMissing:
    """Marks a rotationPolicyRef whose RotationPolicy does not exist."""


POLICY_MISSING = PolicyMissing()


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "message": self.message}


def key_age_seconds(apikey: Mapping[str, Any], now: datetime) -> int | None:
    created = parse_timestamp(((apikey.get("status") or {}).get("currentKey") or {})
                              .get("createdAt"))
    return None if created is None else max(0, int((now - created).total_seconds()))


def findings_for(apikey: Mapping[str, Any], policy: Mapping[str, Any] | PolicyMissing | None,
                 now: datetime, shared_in: Sequence[str] = ()) -> list[Finding]:
    """The compliance findings of one ApiKey.

    `policy` is the RotationPolicy its spec names (POLICY_MISSING when that policy does not
    exist, None when it names none); `shared_in` lists where else its key was found
    (`namespace/secret`), which only a caller that read those Secrets can know.
    """
    spec = apikey.get("spec") or {}
    status = apikey.get("status") or {}
    conditions = status.get("conditions")
    ready = condition_of(conditions, "Ready")
    stalled = condition_of(conditions, "Stalled")
    ref = (spec.get("rotationPolicyRef") or {}).get("name")
    found: list[Finding] = []
    if not ref:
        found.append(Finding("warning", "NoPolicy",
                             "no rotationPolicyRef: the key rotates only on request and can "
                             "live forever (a zombie key)"))
    elif isinstance(policy, PolicyMissing) or "PolicyNotFound" in (
            ready.get("reason"), condition_of(conditions, "Scheduled").get("reason")):
        found.append(Finding("error", "PolicyNotFound",
                             f"RotationPolicy {ref} does not exist: the key does not rotate"))
    if isinstance(policy, Mapping):
        max_age = _max_key_age(policy)
        age = key_age_seconds(apikey, now)
        if max_age is not None and age is not None and age > max_age:
            found.append(Finding(
                "error", "KeyTooOld",
                f"the current key is {human_duration(age)} old, older than maxKeyAge "
                f"{(policy.get('spec') or {}).get('maxKeyAge')} of RotationPolicy {ref}"))
    if stalled.get("status") == "True":
        found.append(Finding("error", "Stalled",
                             f"{stalled.get('reason', 'Stalled')}: {stalled.get('message', '')}"
                             .rstrip(": ")))
    elif ready.get("status") == "False" and ready.get("reason") == "StoreUnavailable":
        found.append(Finding("error", "StoreUnavailable", str(ready.get("message") or
                                                              "the store is unavailable")))
    elif ready.get("status") == "False" and ready.get("reason") != "PolicyNotFound":
        found.append(Finding("error", "NotReady",
                             f"{ready.get('reason', 'NotReady')}: {ready.get('message', '')}"
                             .rstrip(": ")))
    elif ready.get("status") != "True" and ready.get("reason") != "PolicyNotFound":
        found.append(Finding("warning", "NotReady", "not provisioned yet (no Ready condition)"))
    if shared_in:
        found.append(Finding("warning", "SharedKey",
                             "the key is also stored outside its own Secret, in "
                             + ", ".join(sorted(shared_in))))
    return found


def _max_key_age(policy: Mapping[str, Any]) -> int | None:
    text = (policy.get("spec") or {}).get("maxKeyAge")
    if text is None:
        return None
    try:
        return int(parse_duration(text).total_seconds())
    except DurationError:
        return None


def owner_of(apikey: Mapping[str, Any], namespace_labels: Mapping[str, str] | None) -> str | None:
    """The ApiKey's `apikeys.dev/owner` label, else its namespace's, else None."""
    labels = (apikey.get("metadata") or {}).get("labels") or {}
    return labels.get(OWNER_LABEL) or (namespace_labels or {}).get(OWNER_LABEL) or None


def inventory_item(apikey: Mapping[str, Any], policy: Mapping[str, Any] | PolicyMissing | None,
                   namespace_labels: Mapping[str, str] | None, now: datetime,
                   shared_in: Sequence[str] = ()) -> dict[str, Any]:
    """One item of `audit -o json`, with the contract's fields in the contract's order."""
    meta = apikey.get("metadata") or {}
    spec = apikey.get("spec") or {}
    status = apikey.get("status") or {}
    current = status.get("currentKey") or {}
    previous = status.get("previousKey") or {}
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "store": spec.get("store") or "kubernetes",
        "storeRef": status.get("storeRef"),
        "policy": (spec.get("rotationPolicyRef") or {}).get("name"),
        "version": current.get("version"),
        "fingerprint": current.get("fingerprint"),
        "createdAt": current.get("createdAt"),
        "keyAgeSeconds": key_age_seconds(apikey, now),
        "lastRotationTime": status.get("lastRotationTime"),
        "nextRotationTime": status.get("nextRotationTime"),
        "previousValidUntil": previous.get("validUntil"),
        "ready": condition_of(status.get("conditions"), "Ready").get("status") == "True",
        "owner": owner_of(apikey, namespace_labels),
        "scopes": [str(s) for s in spec.get("scopes") or []],
        "findings": [f.as_dict() for f in findings_for(apikey, policy, now, shared_in)],
    }


def fails(items: Iterable[Mapping[str, Any]], fail_on: Severity | None) -> bool:
    """Whether `--fail-on` turns these findings into exit status 1."""
    if fail_on is None:
        return False
    severities = {f["severity"] for item in items for f in item["findings"]}
    return bool(severities) if fail_on == "warning" else "error" in severities


def format_json(items: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps({"items": list(items)}, indent=2)


CSV_FIELDS = ("namespace", "name", "store", "storeRef", "policy", "version", "fingerprint",
              "createdAt", "keyAgeSeconds", "lastRotationTime", "nextRotationTime",
              "previousValidUntil", "ready", "owner", "scopes", "findings")


def format_csv(items: Sequence[Mapping[str, Any]]) -> str:
    """One row per ApiKey; scopes joined by spaces, findings as `severity:code` joined by
    spaces (the messages are in the JSON)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for item in items:
        row = []
        for name in CSV_FIELDS:
            value = item[name]
            if name == "scopes":
                value = " ".join(value)
            elif name == "findings":
                value = " ".join(f"{f['severity']}:{f['code']}" for f in value)
            elif name == "ready":
                value = "true" if value else "false"
            row.append("" if value is None else str(value))
        writer.writerow(row)
    return out.getvalue().rstrip("\n")


AUDIT_COLUMNS = ("NAMESPACE", "NAME", "OWNER", "POLICY", "VERSION", "FINGERPRINT", "KEY AGE",
                 "READY", "FINDINGS")


def format_table(items: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for item in items:
        age = item["keyAgeSeconds"]
        rows.append((
            str(item["namespace"]), str(item["name"]), item["owner"] or "-",
            item["policy"] or "-", str(item["version"] or "-"), item["fingerprint"] or "-",
            "-" if age is None else human_duration(age),
            "True" if item["ready"] else "False",
            ",".join(f["code"] for f in item["findings"]) or "-",
        ))
    return table(AUDIT_COLUMNS, rows)

