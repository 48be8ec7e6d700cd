"""Request accounting and fault injection for the API proxy in front of kube-apiserver.

Every request is recorded once with its Kubernetes verb (``get``, ``list``, ``watch``,
``create``, ``update``, ``patch``, ``delete``, ``deletecollection``) and resource, so that tests
can count API calls ("zero requests while idle", "two writes per key"). Watch streams are
recorded but left out of counts unless asked for, since they are long-lived by nature.

Faults are rules matched against each request before it is served: a delay, an error status
(409, 429 with ``Retry-After``, 500, 503, ...), or both, for the next N matching requests.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

WRITE_VERBS: frozenset[str] = frozenset({"create", "update", "patch", "delete", "deletecollection"})
READ_VERBS: frozenset[str] = frozenset({"get", "list"})

_REASONS = {
    400: "BadRequest", 404: "NotFound", 409: "Conflict", 410: "Expired", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable",
    504: "Timeout",
}


def reason_for(status: int) -> str:
    """The Status ``reason`` the API server uses for an HTTP status code."""
    return _REASONS.get(status, "Unknown")


@dataclass(slots=True)
class RequestRecord:
    """One served request; ``resource`` is the plural, discovery has ``verb='discovery'``."""

    seq: int
    at: float
    method: str
    path: str
    verb: str
    group: str | None = None
    version: str | None = None
    resource: str | None = None
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None
    status: int | None = None
    injected: bool = False


def _as_set(value: str | Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset({value}) if isinstance(value, str) else frozenset(value)


@dataclass
class Fault:
    """A rule that disturbs matching requests; ``None`` criteria match anything.

    ``status`` None means "delay only, then serve normally". ``times`` None means forever.
    ``subresource`` matches exactly when ``match_subresource`` is true (so ``None`` then means
    "the main resource only").
    """

    status: int | None = None
    times: int | None = 1
    verbs: frozenset[str] | None = None
    resource: str | None = None
    group: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    match_subresource: bool = False
    delay: float = 0.0
    retry_after: int | None = None
    message: str | None = None
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    @property
    def remaining(self) -> int | None:
        """How many more requests this fault will hit (None: unlimited)."""
        return None if self.times is None else max(0, self.times - self.hits)

    def matches(self, record: RequestRecord) -> bool:
        """Whether the fault applies to this request (ignores exhaustion)."""
        return (
            (self.verbs is None or record.verb in self.verbs)
            and (self.resource is None or record.resource == self.resource)
            and (self.group is None or record.group == self.group)
            and (self.namespace is None or record.namespace == self.namespace)
            and (self.name is None or record.name == self.name)
            and self._subresource_ok(record.subresource)
        )

    def _subresource_ok(self, subresource: str | None) -> bool:
        if self.match_subresource:
            return subresource == self.subresource
        return self.subresource is None or subresource == self.subresource


@dataclass
class Traffic:
    """The request log (bounded), per-verb counters (unbounded, tiny) and the fault rules.

    Safe to read from any thread: the proxy's loop appends under a lock.
    """

    max_records: int = 100_000
    _records: collections.deque[RequestRecord] = field(init=False)
    _seq: int = field(default=0, init=False)
    _totals: collections.Counter[tuple[str, str | None]] = field(
        default_factory=collections.Counter, init=False)
    _faults: list[Fault] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._records = collections.deque(maxlen=self.max_records)

    # --- recording ---------------------------------------------------------------------------

    def record(self, method: str, path: str, verb: str, *, group: str | None = None,
               version: str | None = None, resource: str | None = None,
               subresource: str | None = None, namespace: str | None = None,
               name: str | None = None) -> RequestRecord:
        """Log a request as it arrives and return its record (the status is filled in later)."""
        with self._lock:
            self._seq += 1
            rec = RequestRecord(seq=self._seq, at=time.monotonic(), method=method, path=path,
                                verb=verb, group=group, version=version, resource=resource,
                                subresource=subresource, namespace=namespace, name=name)
            self._records.append(rec)
            self._totals[(verb, resource)] += 1
        return rec

    def mark(self) -> int:
        """A position in the log: pass it as ``since=`` to count only later requests."""
        with self._lock:
            return self._seq

    def records(self, *, since: int | None = None, verbs: str | Iterable[str] | None = None,
                resource: str | None = None, group: str | None = None,
                namespace: str | None = None, name: str | None = None,
                subresource: str | None = None, include_watches: bool = False,
                include_discovery: bool = False) -> list[RequestRecord]:
        """The logged requests that match; watches and discovery are excluded unless asked."""
        wanted = _as_set(verbs)
        with self._lock:
            snapshot = list(self._records)
        return [
            r for r in snapshot
            if (since is None or r.seq > since)
            and (wanted is None or r.verb in wanted)
            and (wanted is not None or include_watches or r.verb != "watch")
            and (wanted is not None or include_discovery or r.verb not in ("discovery", "other"))
            and (resource is None or r.resource == resource)
            and (group is None or r.group == group)
            and (namespace is None or r.namespace == namespace)
            and (name is None or r.name == name)
            and (subresource is None or r.subresource == subresource)
        ]

    def count(self, **criteria: object) -> int:
        """How many logged requests match; takes the keyword arguments of :meth:`records`."""
        return len(self.records(**criteria))  # type: ignore[arg-type]

    def totals(self) -> dict[tuple[str, str | None], int]:
        """Counts by (verb, resource) since the start or the last :meth:`reset`, never trimmed."""
        with self._lock:
            return dict(self._totals)

    def reset(self) -> None:
        """Forget the log and the counters (the faults stay)."""
        with self._lock:
            self._records.clear()
            self._totals.clear()

    # --- faults ------------------------------------------------------------------------------

    def inject(self, *, status: int | None = None, times: int | None = 1,
               verbs: str | Iterable[str] | None = None, resource: str | None = None,
               group: str | None = None, namespace: str | None = None, name: str | None = None,
               subresource: str | None = None, match_subresource: bool = False,
               delay: float = 0.0, retry_after: int | None = None,
               message: str | None = None) -> Fault:
        """Disturb the next ``times`` matching requests; returns the rule (see :class:`Fault`)."""
        fault = Fault(status=status, times=times, verbs=_as_set(verbs), resource=resource,
                      group=group, namespace=namespace, name=name, subresource=subresource,
                      match_subresource=match_subresource, delay=delay,
                      retry_after=retry_after, message=message)
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        """Withdraw one fault rule."""
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear_faults(self) -> None:
        """Withdraw all fault rules."""
        with self._lock:
            self._faults.clear()

    def take_fault(self, record: RequestRecord) -> Fault | None:
        """The first live fault matching the request, with its hit counted; exhausted ones go."""
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted and fault.matches(record):
                    fault.hits += 1
                    record.injected = fault.status is not None
                    if fault.exhausted:
                        self._faults.remove(fault)
                    return fault
        return None
