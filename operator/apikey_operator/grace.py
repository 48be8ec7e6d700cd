"""Usage-aware grace (pure: no I/O, the clock comes in with each call).

Consumers that verify keys with `KeyRing` count each verification by fingerprint; the
operator's usage monitor asks Prometheus, in one query for every key in its grace, how
often each fingerprint was verified in the last `window`. This module turns those answers
into what the rotation core decides on:

* `observe` folds one answer into a key's `KeyUsage`. An answer *proves* the previous key
  unused over [at - window, at] only when the query succeeded, the current key was verified
  in that window (its consumers are alive and reporting) and the previous key was not. Proofs
  whose windows meet form an unbroken run: `unused_since` is where the run starts. A failed
  query, a window without reports of the current key, or one use of the previous key breaks
  the run; so does a restart of the operator (the run lives in memory): each of them can
  only make a grace end later, never earlier.
* `decide` says whether the grace ends early (every condition of the contract holds) and
  whether `PreviousKeyInUse` is due (less than a tenth of the grace left, the previous key
  verified in the latest window, not reported yet in this grace).

The previous key with no series at all counts as unused only together with a verified
current key: KeyRing exports a zero for every key it holds from the moment it loads it, so
a reporting consumer that still accepted the previous key would show its series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from apikey_operator.spec import EarlyExpiry

METRIC = "apikey_keyring_verifications_total"


@dataclass(frozen=True)
class Answer:
    """One batched query's answer: accepted verifications in [at - window, at] by fingerprint
    (a fingerprint without any series is absent). `ok` is False when the query failed."""

    at: datetime
    window: timedelta
    ok: bool
    counts: Mapping[str, float]


@dataclass(frozen=True)
class KeyUsage:
    """What the usage source says of one key in its grace, as of its latest answer."""

    at: datetime
    window: timedelta
    current_fingerprint: str
    previous_fingerprint: str
    current_verifications: int  # in the latest window
    previous_verifications: int  # in the latest window
    unused_since: datetime | None  # start of the unbroken run of proofs; None: no proof now

    @property
    def unused_for(self) -> timedelta:
        """How long the previous key is proven unused (zero without a proof)."""
        return self.at - self.unused_since if self.unused_since is not None else timedelta()


@dataclass(frozen=True)
class UsageWatch:
    """What the usage monitor needs to know of a key in its grace (no key material)."""

    current_fingerprint: str
    previous_fingerprint: str
    valid_until: datetime
    grace: timedelta
    early_expiry: EarlyExpiry | None
    # PreviousKeyInUse was already posted in this grace (status.previousKey.inUseReportedAt).
    in_use_reported: bool


@dataclass(frozen=True)
class Verdict:
    end_early: bool = False
    report_in_use: bool = False


def query(fingerprints: Iterable[str], window: timedelta) -> str:
    """The one PromQL query for every key in its grace: accepted verifications per
    fingerprint over the window. Fingerprints are `sha256:` and hex digits only, so they need
    no escaping in the regular expression; anything else is left out."""
    wanted = sorted({fp for fp in fingerprints if _is_fingerprint(fp)})
    seconds = max(1, int(window.total_seconds()))
    return (f'sum by (fingerprint) (increase({METRIC}{{result="accepted",'
            f'fingerprint=~"{"|".join(wanted)}"}}[{seconds}s]))')


def _is_fingerprint(value: str) -> bool:
    body = value.removeprefix("sha256:")
    return (value.startswith("sha256:") and len(body) == 12
            and all(c in "0123456789abcdef" for c in body))


def observe(before: KeyUsage | None, answer: Answer, current_fingerprint: str,
            previous_fingerprint: str) -> KeyUsage | None:
    """`before` with `answer` folded in; None when the answer tells nothing (a failed query)."""
    if not answer.ok:
        return None
    current = answer.counts.get(current_fingerprint)
    previous = answer.counts.get(previous_fingerprint, 0.0)
    # increase() extrapolates: an unchanged counter is exactly 0, any use is more than 0.
    proof = current is not None and current > 0 and previous <= 0
    unused_since = None
    if proof:
        unused_since = answer.at - answer.window
        same_key = before is not None and (before.current_fingerprint,
                                           before.previous_fingerprint) == (
            current_fingerprint, previous_fingerprint)
        if (same_key and before is not None and before.unused_since is not None
                and answer.at - before.at <= answer.window):
            unused_since = min(unused_since, before.unused_since)
    return KeyUsage(at=answer.at, window=answer.window,
                    current_fingerprint=current_fingerprint,
                    previous_fingerprint=previous_fingerprint,
                    current_verifications=round(current or 0.0),
                    previous_verifications=math.ceil(max(previous, 0.0)),
                    unused_since=unused_since)


def decide(now: datetime, watch: UsageWatch, usage: KeyUsage | None) -> Verdict:
    """Whether the grace of `watch` ends early now, or PreviousKeyInUse is due now."""
    if usage is None or now >= watch.valid_until:
        return Verdict()
    if (usage.current_fingerprint, usage.previous_fingerprint) != (
            watch.current_fingerprint, watch.previous_fingerprint):
        return Verdict()  # an answer about another rotation
    if now - usage.at > usage.window:
        return Verdict()  # stale: the source has not answered for a whole window
    early = watch.early_expiry
    rotated_at = watch.valid_until - watch.grace
    if (early is not None and usage.unused_since is not None
            and usage.unused_for >= early.unused_for
            and now - rotated_at >= early.minimum_grace):
        return Verdict(end_early=True)
    in_use = (usage.previous_verifications > 0
              and watch.valid_until - now < watch.grace / 10
              and not watch.in_use_reported)
    return Verdict(report_in_use=in_use)
