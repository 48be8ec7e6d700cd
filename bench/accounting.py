"""Turning the counting proxy's and the stores' cumulative counters into per-key figures.

Requests are split three ways, by who sent them:

- ``kopf``: kopf's own client. Its writes to ApiKeys (finalizer, progress and diff-base
  patches) are kopf's bookkeeping; its Event POSTs are either kopf's log lines (reason
  ``Logging``) or Events the operator asked kopf to post (any other reason: ours).
- ``operator``: the operator's own API client (``apikey_operator.kube`` on aiohttp, User-Agent
  ``apikey-operator/...``): Secrets, status patches, reads.
  Requests to Secrets in the operator's namespace are the built-in store's.
- ``bench``: the driver; never counted (it talks to the kube-apiserver directly anyway).

Watch streams are long-lived and counted apart, as the targets say "beyond the watches".
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping
from typing import Any

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS = frozenset({"get", "list"})
KOPF_LOG_REASON = "Logging"
Row = Mapping[str, Any]
RowKey = tuple[str, str, str, str, str]


def _key(row: Row) -> RowKey:
    return (row["actor"], row["verb"], row["resource"], row["subresource"], row["tag"])


def diff_counts(before: Iterable[Row], after: Iterable[Row]) -> dict[RowKey, int]:
    """Requests per (actor, verb, resource, subresource, tag) between two snapshots."""
    old = {_key(r): int(r["count"]) for r in before}
    delta = {}
    for row in after:
        n = int(row["count"]) - old.get(_key(row), 0)
        if n:
            delta[_key(row)] = n
    return delta


def category(key: RowKey) -> str:
    """Which bucket a request belongs to (see the module docstring)."""
    actor, verb, resource, _sub, tag = key
    if actor == "bench":
        return "driver"
    if verb == "watch":
        return "watch"
    if verb not in WRITE_VERBS | READ_VERBS:
        return "other"
    kind = "write" if verb in WRITE_VERBS else "read"
    if resource == "events" and verb == "create":
        return "kopf_log_event" if tag == f"reason:{KOPF_LOG_REASON}" else "our_event"
    if actor == "kopf":
        return f"kopf_{kind}"
    if tag == "store":
        return f"store_{kind}"
    return f"our_{kind}"


def summarize(delta: Mapping[RowKey, int], keys: int) -> dict[str, Any]:
    """Per-key request figures of one window: by category, by verb, and every row."""
    per = max(keys, 1)
    by_category: collections.Counter[str] = collections.Counter()
    by_verb: collections.Counter[str] = collections.Counter()
    rows = []
    for key, n in sorted(delta.items()):
        cat = category(key)
        by_category[cat] += n
        if cat not in ("driver", "watch", "other"):
            by_verb[key[1]] += n
        if cat != "driver":
            actor, verb, resource, sub, tag = key
            rows.append({"actor": actor, "verb": verb,
                         "resource": resource + (f"/{sub}" if sub else ""), "tag": tag,
                         "count": n, "per_key": round(n / per, 3)})
    counted = sum(n for cat, n in by_category.items() if cat not in ("driver", "watch",
                                                                       "other"))
    ours_writes = by_category["our_write"] + by_category["store_write"]
    return {
        "keys": keys,
        "requests": counted,
        "requests_per_key": round(counted / per, 3),
        "by_verb_per_key": {v: round(n / per, 3) for v, n in sorted(by_verb.items())},
        "writes_per_key": {
            "ours_including_events": round((ours_writes + by_category["our_event"]) / per, 3),
            "ours_excluding_events": round(ours_writes / per, 3),
            "our_events": round(by_category["our_event"] / per, 3),
            "store_backend": round(by_category["store_write"] / per, 3),
            "kopf_bookkeeping": round(by_category["kopf_write"] / per, 3),
            "kopf_log_events": round(by_category["kopf_log_event"] / per, 3),
            "all": round((ours_writes + by_category["our_event"] + by_category["kopf_write"]
                          + by_category["kopf_log_event"]) / per, 3),
        },
        "reads_per_key": {
            "ours": round((by_category["our_read"] + by_category["store_read"]) / per, 3),
            "kopf": round(by_category["kopf_read"] / per, 3),
        },
        "watch_requests": by_category["watch"],
        "rows": rows,
    }


def store_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Store calls and seconds per method between two ``/stats`` snapshots."""
    old = {(c["store"], c["method"]): c for c in before.get("calls", [])}
    calls: collections.Counter[str] = collections.Counter()
    seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
    errors: collections.Counter[str] = collections.Counter()
    for c in after.get("calls", []):
        prev = old.get((c["store"], c["method"]), {"count": 0, "seconds": 0.0, "errors": 0})
        calls[c["method"]] += int(c["count"]) - int(prev["count"])
        seconds[c["method"]] += float(c["seconds"]) - float(prev["seconds"])
        errors[c["method"]] += int(c["errors"]) - int(prev["errors"])
    return {"calls": {m: n for m, n in sorted(calls.items()) if n},
            "seconds": {m: round(s, 4) for m, s in sorted(seconds.items()) if calls[m]},
            "errors": {m: n for m, n in sorted(errors.items()) if n},
            "total": sum(calls.values())}


def store_figures(delta: Mapping[str, Any], keys: int) -> dict[str, Any]:
    """Per-key store calls, and the mean time of one call per method (milliseconds)."""
    per = max(keys, 1)
    calls: Mapping[str, int] = delta["calls"]
    return {
        "calls_per_key": round(delta["total"] / per, 3),
        "by_method_per_key": {m: round(n / per, 3) for m, n in calls.items()},
        "mean_ms_by_method": {m: round(1000 * delta["seconds"][m] / n, 2)
                              for m, n in calls.items() if n},
        "errors": dict(delta["errors"]),
    }


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def latency_summary(values: Iterable[float]) -> dict[str, float]:
    data = list(values)
    return {"count": len(data),
            "p50_s": round(percentile(data, 50), 4),
            "p90_s": round(percentile(data, 90), 4),
            "p99_s": round(percentile(data, 99), 4),
            "max_s": round(max(data, default=0.0), 4)}
