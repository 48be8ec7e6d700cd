"""What the command line prints (pure): kubectl-style tables, ages, and the `status` detail view.

Columns mean what kubectl's mean: AGE is the age of the object (its creationTimestamp),
KEY AGE the age of the current key. Nothing here ever sees key material: only status,
metadata and Events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from apikey_operator.conditions import condition_of

COLUMN_GAP = "   "  # kubectl's printer separates columns with three spaces


def parse_timestamp(text: object) -> datetime | None:
    """An RFC 3339 timestamp (`Z` or an offset, with or without fractions), else None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def human_duration(seconds: float) -> str:
    """kubectl's HumanDuration: `45s`, `3m20s`, `2h5m`, `3d4h`, `400d`, `2y10d`."""
    total = int(seconds)
    if total < 0:
        return "<invalid>"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = divmod(hours // 24, 365)
    if years < 8:
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{years}y"


def age(timestamp: object, now: datetime) -> str:
    """The time since `timestamp`, as kubectl prints it; `<unknown>` when there is none."""
    moment = parse_timestamp(timestamp)
    if moment is None:
        return "<unknown>"
    return human_duration((now - moment).total_seconds())


def relative(timestamp: object, now: datetime) -> str:
    """`in 3d4h` or `5m ago`, for times that may lie ahead (next rotation, grace end)."""
    moment = parse_timestamp(timestamp)
    if moment is None:
        return "-"
    delta = (moment - now).total_seconds()
    return f"in {human_duration(delta)}" if delta >= 0 else f"{human_duration(-delta)} ago"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, three spaces apart, no trailing blanks (kubectl's printer)."""
    lines = [list(header), *[list(r) for r in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(COLUMN_GAP.join(c.ljust(w) for c, w in zip(line, widths, strict=True))
                     .rstrip() for line in lines)


def _sorted(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(items, key=lambda i: (str(i["metadata"].get("namespace", "")),
                                        str(i["metadata"].get("name", ""))))


STATUS_COLUMNS = ("NAME", "READY", "REASON", "STORE", "VERSION", "KEY AGE", "NEXT ROTATION",
                  "GRACE ENDS", "AGE")


def format_status_table(items: Sequence[Mapping[str, Any]], now: datetime, *,
                        all_namespaces: bool = True) -> str:
    """The `status` table: one row per ApiKey; a NAMESPACE column first with -A."""
    header = (("NAMESPACE",) if all_namespaces else ()) + STATUS_COLUMNS
    rows = []
    for item in _sorted(items):
        meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
        current = status.get("currentKey") or {}
        previous = status.get("previousKey") or {}
        ready = condition_of(status.get("conditions"), "Ready")
        row = (
            str(meta.get("name", "")),
            str(ready.get("status", "Unknown")),
            str(ready.get("reason") or "-"),
            str(spec.get("store") or "kubernetes"),
            str(current.get("version", "-")),
            age(current.get("createdAt"), now) if current else "-",
            relative(status.get("nextRotationTime"), now),
            relative(previous.get("validUntil"), now),
            age(meta.get("creationTimestamp"), now),
        )
        rows.append(((str(meta.get("namespace", "")),) if all_namespaces else ()) + row)
    return table(header, rows)


def _field(label: str, value: object, indent: int = 0) -> str:
    return f"{' ' * indent}{label + ':':<{22 - indent}}{value}"


def format_status_detail(item: Mapping[str, Any], events: Sequence[Mapping[str, Any]],
                         now: datetime, *, event_limit: int = 10) -> str:
    """`status NAME`: what `cmctl status certificate` shows for a Certificate."""
    meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
    policy = (spec.get("rotationPolicyRef") or {}).get("name")
    secret = (spec.get("secret") or {}).get("name") or meta.get("name")
    lines = [
        _field("Name", meta.get("name", "")),
        _field("Namespace", meta.get("namespace", "")),
        _field("Created at", f"{meta.get('creationTimestamp', '<unknown>')} "
                             f"({age(meta.get('creationTimestamp'), now)} ago)"),
        _field("Store", spec.get("store") or "kubernetes"),
        _field("Store ref", status.get("storeRef") or "<none>"),
        _field("Secret", secret),
        _field("Rotation policy", policy or "<none> (rotates only on request)"),
        _field("Scopes", ", ".join(str(s) for s in spec.get("scopes") or []) or "<none>"),
        "Conditions:",
    ]
    conditions = status.get("conditions") or []
    if not conditions:
        lines.append("  No conditions set")
    for cond in conditions:
        lines.append(f"  {cond.get('type')}: {cond.get('status')}, Reason: "
                     f"{cond.get('reason', '')}, Message: {cond.get('message', '')}")
    current = status.get("currentKey") or {}
    previous = status.get("previousKey") or {}
    lines.append("Current key:")
    if current:
        lines += [_field("Version", current.get("version", "-"), 2),
                  _field("Fingerprint", current.get("fingerprint", "-"), 2),
                  _field("Created at", f"{current.get('createdAt', '-')} "
                                       f"({age(current.get('createdAt'), now)} old)", 2)]
    else:
        lines.append("  <none> (not provisioned yet)")
    lines.append("Previous key:")
    if previous:
        lines += [_field("Version", previous.get("version", "-"), 2),
                  _field("Fingerprint", previous.get("fingerprint", "-"), 2),
                  _field("Valid until", f"{previous.get('validUntil', '-')} "
                                        f"({relative(previous.get('validUntil'), now)})", 2)]
    else:
        lines.append("  <none> (no old key is valid)")
    lines.append(_field("Last rotation", status.get("lastRotationTime") or "<never>"))
    next_rotation = status.get("nextRotationTime")
    lines.append(_field("Next rotation", f"{next_rotation} ({relative(next_rotation, now)})"
                        if next_rotation else "<none> (no policy)"))
    queued = status.get("queuedRotation")
    if queued:
        lines += ["Queued rotation:",
                  _field("Trigger", queued.get("trigger", "-"), 2),
                  _field("Requested at", queued.get("requestedAt", "-"), 2),
                  _field("Runs at", f"{queued.get('runsAt', '-')} "
                                    f"({relative(queued.get('runsAt'), now)})", 2)]
    lines.append("Events:")
    recent = list(events)[-event_limit:]
    if not recent:
        lines.append("  <none>")
    else:
        rows = []
        for event in recent:
            when = (event.get("lastTimestamp") or event.get("eventTime")
                    or (event.get("metadata") or {}).get("creationTimestamp"))
            count = int(event.get("count") or 1)
            seen = age(when, now) + (f" (x{count})" if count > 1 else "")
            rows.append(("  " + str(event.get("type", "")), str(event.get("reason", "")), seen,
                         str(event.get("message", "")).replace("\n", " ")))
        lines.append(table(("  Type", "Reason", "Age", "Message"), rows))
    return "\n".join(lines)
