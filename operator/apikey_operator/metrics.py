"""Prometheus metrics exactly as the contract names them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()

ROTATIONS = Counter(
    "apikey_rotations_total", "Rotations by trigger and result",
    ["namespace", "name", "trigger", "result"], registry=REGISTRY,
)
REVOCATIONS = Counter(
    "apikey_revocations_total", "Key versions revoked in a store, by kind (expired, emergency)",
    ["namespace", "name", "kind"], registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "apikey_store_errors_total", "Failed store operations",
    ["store", "operation"], registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    "apikey_reconcile_duration_seconds", "Time to reconcile one ApiKey",
    registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

REVOCATION_DURATION = Histogram(
    "apikey_revocation_duration_seconds",
    "Time from a revoke request (the annotation's timestamp) to the old key revoked in the store",
    registry=REGISTRY, buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
)
USAGE_QUERIES = Counter(
    "apikey_usage_queries_total",
    "Batched usage queries to the usage source (one for every key in its grace), by result",
    ["result"], registry=REGISTRY,
)
POLICY_FINDINGS = Gauge(
    "apikey_policy_findings", "Compliance findings of an ApiKey (1 while the finding holds)",
    ["namespace", "name", "code"], registry=REGISTRY,
)


def observe_revocation(requested: str, revoked_at: datetime) -> None:
    """Record a revoke's duration when the annotation value is a timestamp (as the command
    line writes it); a hand-written value such as "now" says nothing about when, so none."""
    try:
        at = datetime.fromisoformat(requested.replace("Z", "+00:00"))
    except ValueError:
        return
    if at.tzinfo is None:
        return
    seconds = (revoked_at - at).total_seconds()
    if 0 <= seconds < 86400:
        REVOCATION_DURATION.observe(seconds)


def set_findings(namespace: str, name: str, codes: Iterable[str]) -> None:
    """Make this key's apikey_policy_findings series exactly `codes` (see audit.findings_for)."""
    wanted = set(codes)
    for code in _finding_codes(namespace, name) - wanted:
        POLICY_FINDINGS.remove(namespace, name, code)
    for code in wanted:
        POLICY_FINDINGS.labels(namespace, name, code).set(1)


def _finding_codes(namespace: str, name: str) -> set[str]:
    return {sample.labels["code"] for family in POLICY_FINDINGS.collect()
            for sample in family.samples
            if sample.labels.get("namespace") == namespace and sample.labels.get("name") == name}


class _KeyTimes(Collector):
    """Key age and next rotation, computed at scrape time from what each worker last saw."""

    def __init__(self) -> None:
        self.created: dict[tuple[str, str], datetime] = {}
        self.next_rotation: dict[tuple[str, str], datetime] = {}
        # role (current, previous) -> fingerprint: joins what consumers' KeyRings report (by
        # fingerprint) to the ApiKey it belongs to, in alert rules.
        self.fingerprints: dict[tuple[str, str], dict[str, str]] = {}
        self.grace_end: dict[tuple[str, str], datetime] = {}
        # The operator's own clock (handlers.build_operator sets it): ages agree with status.
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock()
        age = GaugeMetricFamily("apikey_key_age_seconds", "Age of the current key",
                                labels=["namespace", "name"])
        for (ns, name), created in list(self.created.items()):
            age.add_metric([ns, name], (now - created).total_seconds())
        yield age
        nxt = GaugeMetricFamily("apikey_next_rotation_timestamp_seconds",
                                "When the key is next due to rotate (Unix time)",
                                labels=["namespace", "name"])
        for (ns, name), due in list(self.next_rotation.items()):
            nxt.add_metric([ns, name], due.timestamp())
        yield nxt
        info = GaugeMetricFamily("apikey_key_info",
                                 "1 for each valid key of an ApiKey, by role and fingerprint "
                                 "(never the key)",
                                 labels=["namespace", "name", "role", "fingerprint"])
        for (ns, name), roles in list(self.fingerprints.items()):
            for role, fp in sorted(roles.items()):
                info.add_metric([ns, name, role, fp], 1)
        yield info
        grace = GaugeMetricFamily("apikey_grace_end_timestamp_seconds",
                                  "When the previous key's grace ends (Unix time)",
                                  labels=["namespace", "name"])
        for (ns, name), end in list(self.grace_end.items()):
            grace.add_metric([ns, name], end.timestamp())
        yield grace


KEY_TIMES = _KeyTimes()
REGISTRY.register(KEY_TIMES)


def observe_key(namespace: str, name: str, created: datetime | None,
                next_rotation: datetime | None, fingerprints: dict[str, str] | None = None,
                grace_end: datetime | None = None) -> None:
    key = (namespace, name)
    if fingerprints:
        KEY_TIMES.fingerprints[key] = dict(fingerprints)
    else:
        KEY_TIMES.fingerprints.pop(key, None)
    if grace_end is None:
        KEY_TIMES.grace_end.pop(key, None)
    else:
        KEY_TIMES.grace_end[key] = grace_end
    if created is None:
        KEY_TIMES.created.pop(key, None)
    else:
        KEY_TIMES.created[key] = created
    if next_rotation is None:
        KEY_TIMES.next_rotation.pop(key, None)
    else:
        KEY_TIMES.next_rotation[key] = next_rotation


def forget_key(namespace: str, name: str) -> None:
    """Drop every series of a deleted ApiKey: per-key label sets must not outlive their key,
    or a cluster that churns keys grows its metrics without bound."""
    observe_key(namespace, name, None, None)
    set_findings(namespace, name, ())
    for counter in (ROTATIONS, REVOCATIONS):
        names = counter._labelnames
        children = {tuple(sample.labels[label] for label in names)
                    for family in counter.collect() for sample in family.samples
                    if sample.labels.get("namespace") == namespace
                    and sample.labels.get("name") == name}
        for values in children:
            counter.remove(*values)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104
    """Serve /metrics in a background thread."""
    start_http_server(port, addr=address, registry=REGISTRY)
