"""Measured emergency revokes: `drill`, `revoke --fingerprint` and `scan --revoke`.

A revoke is requested the way the `revoke` verb does it (the one-shot annotation) and then
watched until it is done, each step timed from the request:

1. the new key is in the Secret (its current data key no longer holds an old key);
2. the old keys are gone from the Secret (no data key holds one);
3. the old versions are revoked in the store, read from the store itself through the
   same backend the operator uses (never inferred from the ApiKey's status);
4. with a verify URL: a service using `KeyRing` accepts the new key and refuses the old.

Key material stays in memory: only versions, fingerprints and seconds are reported.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from apikey_operator.conditions import condition_of
from apikey_operator.keys import fingerprint
from apikey_operator.kube import KubeClient, KubeError, decode_data, event_time
from apikey_operator.presentation import parse_timestamp, table
from apikey_operator.spec import REVOKE_ANNOTATION
from apikey_operator.stores.base import KeyRef, Store, StoreError

VERSION_ANNOTATION = "apikeys.dev/version"
FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{12}$")
POLL_SECONDS = 0.1

# (key in `seconds`, what the step means), in the order they complete.
STEPS = (
    ("newKeyInSecret", "new key in the Secret"),
    ("oldKeyGoneFromSecret", "old key gone from the Secret"),
    ("storeRevoked", "old key revoked in the store"),
    ("verified", "service accepts new key, refuses old"),
)
STEP_TITLES = dict(STEPS)


class DrillError(Exception):
    """A one-line reason the revoke could not be requested or measured."""


def check_fingerprint(text: str) -> str:
    if not FINGERPRINT.fullmatch(text):
        raise DrillError(f"malformed fingerprint {text!r}: expected sha256: and 12 lowercase "
                         "hex digits, as status and `scan` print them")
    return text


def holders_of(items: Sequence[Mapping[str, Any]], wanted: str) -> list[tuple[str, str, str]]:
    """(namespace, name, "current"|"previous") of every ApiKey whose status shows a key
    with fingerprint `wanted`."""
    found = []
    for item in items:
        meta, status = item.get("metadata") or {}, item.get("status") or {}
        for role in ("current", "previous"):
            if (status.get(f"{role}Key") or {}).get("fingerprint") == wanted:
                found.append((str(meta.get("namespace")), str(meta.get("name")), role))
    return found


@dataclass
class Target:
    """What a revoke of one ApiKey must make disappear, read just before the request."""

    namespace: str
    name: str
    uid: str
    store_name: str
    secret_name: str
    current_field: str
    old_versions: list[int]
    old_fingerprints: set[str]
    current_key: str = field(default="", repr=False)
    old_keys: list[str] = field(default_factory=list, repr=False)


@dataclass
class Outcome:
    namespace: str
    name: str
    revoked_versions: list[int]
    requested_at: datetime
    new_version: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    failed_step: str | None = None
    failure: str = ""
    store_checked: bool = True

    @property
    def ok(self) -> bool:
        return self.failed_step is None


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """The contract's `drill -o json` document (plus each step and a failure, if any)."""
    seconds = dict(outcome.seconds)
    if "newKeyInSecret" in seconds and "oldKeyGoneFromSecret" in seconds:
        seconds["secretUpdated"] = max(seconds["newKeyInSecret"], seconds["oldKeyGoneFromSecret"])
    if outcome.ok:
        seconds["total"] = max(seconds.values(), default=0.0)
    document: dict[str, Any] = {
        "namespace": outcome.namespace,
        "name": outcome.name,
        "revokedVersions": outcome.revoked_versions,
        "newVersion": outcome.new_version,
        "requestedAt": outcome.requested_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
    if not outcome.ok:
        document["failed"] = {"step": outcome.failed_step, "message": outcome.failure}
    return document


def outcome_table(outcome: Outcome) -> str:
    doc = outcome_json(outcome)
    versions = ", ".join(str(v) for v in outcome.revoked_versions)
    lines = [f"Drill: emergency revoke of ApiKey {outcome.namespace}/{outcome.name}, "
             f"requested at {doc['requestedAt']}",
             f"Revoked versions: {versions}; new version: {outcome.new_version or '-'}"]
    rows = []
    for key, title in STEPS:
        if key in outcome.seconds:
            rows.append((title, f"{outcome.seconds[key]:.3f}"))
        elif key == outcome.failed_step:
            rows.append((title, "FAILED"))
    if outcome.ok:
        rows.append(("total", f"{doc['seconds']['total']:.3f}"))
    lines.append(table(("STEP", "SECONDS"), rows))
    if not outcome.store_checked:
        lines.append("The store was not read (its configuration is not available here).")
    if not outcome.ok:
        lines.append(f"FAILED at step '{STEP_TITLES.get(str(outcome.failed_step))}': "
                     f"{outcome.failure}")
    return "\n".join(lines)


class Revoker:
    """Requests revokes and measures them; `stores` maps store names to backends that
    read the very entries the operator writes."""

    def __init__(self, kube: KubeClient, stores: Mapping[str, Store], *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.kube = kube
        self.stores = stores
        self.clock = clock
        self.wall = wall

    async def target(self, namespace: str, name: str, *, with_keys: bool = False) -> Target:
        """Read what is to be revoked; raise DrillError when there is nothing to revoke."""
        item = await self.kube.get_apikey(namespace, name)
        if item is None:
            raise DrillError(f"ApiKey {namespace}/{name} not found")
        meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
        versions, fingerprints = [], set()
        for role in ("currentKey", "previousKey"):
            entry = status.get(role) or {}
            if entry.get("version") is not None:
                versions.append(int(entry["version"]))
            if entry.get("fingerprint"):
                fingerprints.add(str(entry["fingerprint"]))
        if not versions:
            raise DrillError(f"ApiKey {namespace}/{name} has no key yet: nothing to revoke")
        secret_spec = spec.get("secret") or {}
        target = Target(namespace=namespace, name=name, uid=str(meta.get("uid", "")),
                        store_name=str(spec.get("store") or "kubernetes"),
                        secret_name=str(secret_spec.get("name") or name),
                        current_field=str(secret_spec.get("currentKey") or "api-key"),
                        old_versions=sorted(versions), old_fingerprints=fingerprints)
        if with_keys:
            data = await self._secret_data(target)
            target.current_key = data.get(target.current_field, "")
            target.old_keys = [v for v in data.values() if fingerprint(v) in fingerprints]
            if not target.old_keys:
                raise DrillError(f"Secret {namespace}/{target.secret_name} holds none of the "
                                 "keys to revoke: cannot verify them")
        return target

    async def _secret_data(self, target: Target) -> dict[str, str]:
        return (await self._secret(target))[0]

    async def _secret(self, target: Target) -> tuple[dict[str, str], int | None]:
        """The Secret's decoded data and the key version its annotation names."""
        secret = await self.kube.get_secret(target.namespace, target.secret_name) or {}
        version = ((secret.get("metadata") or {}).get("annotations") or {}).get(VERSION_ANNOTATION)
        try:
            number = int(version) if version is not None else None
        except ValueError:
            number = None
        return decode_data(secret.get("data")), number

    async def request(self, target: Target) -> tuple[float, datetime]:
        """Set the revoke annotation; the monotonic and wall-clock moments of the request."""
        wall = self.wall()
        started = self.clock()
        value = wall.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await self.kube.patch_apikey_annotations(target.namespace, target.name,
                                                 {REVOKE_ANNOTATION: value})
        return started, wall

    async def measure(self, target: Target, started: float, requested_at: datetime, *,
                      within: float, verify_url: str | None = None) -> Outcome:
        """Watch the revoke until every step is done or `within` seconds have passed."""
        outcome = Outcome(target.namespace, target.name, list(target.old_versions),
                          requested_at)
        store = self.stores.get(target.store_name)
        outcome.store_checked = store is not None
        ref = KeyRef(target.namespace, target.name, target.uid)
        wanted = ["newKeyInSecret", "oldKeyGoneFromSecret"]
        if store is not None:
            wanted.append("storeRevoked")
        deadline = started + within
        last_error = ""
        while True:
            now = self.clock() - started
            try:
                await self._observe(target, store, ref, outcome, now)
            except (KubeError, StoreError) as exc:
                last_error = str(exc)
            if all(step in outcome.seconds for step in wanted):
                break
            if self.clock() > deadline:
                return await self._failed(target, outcome, wanted, within, last_error)
            await asyncio.sleep(POLL_SECONDS)
        while outcome.new_version is None and self.clock() < deadline:
            # No version annotation on the Secret: the ApiKey's status names it once written.
            item = await self.kube.get_apikey(target.namespace, target.name) or {}
            version = ((item.get("status") or {}).get("currentKey") or {}).get("version")
            if version is not None and int(version) not in target.old_versions:
                outcome.new_version = int(version)
            else:
                await asyncio.sleep(POLL_SECONDS)
        if verify_url:
            await self._verify(target, verify_url, started, deadline, outcome)
        return outcome

    async def _observe(self, target: Target, store: Store | None, ref: KeyRef,
                       outcome: Outcome, now: float) -> None:
        seconds = outcome.seconds
        if "oldKeyGoneFromSecret" not in seconds:
            data, version = await self._secret(target)
            held = {fingerprint(v) for v in data.values() if v}
            current = data.get(target.current_field, "")
            if "newKeyInSecret" not in seconds and current and \
                    fingerprint(current) not in target.old_fingerprints:
                seconds["newKeyInSecret"] = now
                # The annotation is written with the data: it names the version just seen.
                if version is not None and version not in target.old_versions:
                    outcome.new_version = version
                if target.old_keys:
                    target.current_key = current
            if "newKeyInSecret" in seconds and not held & target.old_fingerprints:
                seconds["oldKeyGoneFromSecret"] = now
        if store is not None and "storeRevoked" not in seconds:
            state = await store.read(ref)
            if not set(state.valid_keys()) & set(target.old_versions):
                seconds["storeRevoked"] = now

    async def _failed(self, target: Target, outcome: Outcome, wanted: list[str],
                      within: float, last_error: str) -> Outcome:
        outcome.failed_step = next(step for step in wanted if step not in outcome.seconds)
        reasons = [f"not done within {within:g}s"]
        try:
            item = await self.kube.get_apikey(target.namespace, target.name) or {}
            ready = condition_of((item.get("status") or {}).get("conditions"), "Ready")
            if ready:
                reasons.append(f"Ready={ready.get('status')} {ready.get('reason', '')}: "
                               f"{ready.get('message', '')}".rstrip(": "))
            events = await self.kube.list_events(target.namespace, "ApiKey", target.name)
            warnings = [e for e in events if e.get("type") == "Warning"
                        and (parse_timestamp(event_time(e)) or outcome.requested_at)
                        >= outcome.requested_at.replace(microsecond=0)]
            if warnings:
                last = warnings[-1]
                reasons.append(f"last Warning Event {last.get('reason')}: "
                               f"{last.get('message', '')}")
            elif ready.get("status") == "True" and "newKeyInSecret" not in outcome.seconds:
                reasons.append("the operator has not acted on the request (is it running?)")
        except KubeError as exc:
            reasons.append(str(exc))
        if last_error:
            reasons.append(f"last read error: {last_error}")
        outcome.failure = "; ".join(reasons)
        return outcome

    async def _verify(self, target: Target, url: str, started: float, deadline: float,
                      outcome: Outcome) -> None:
        import aiohttp

        async def status_for(session: aiohttp.ClientSession, key: str) -> int:
            async with session.get(url, headers={"Authorization": f"Bearer {key}"}) as answer:
                return answer.status

        detail = ""
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    new_status = await status_for(session, target.current_key)
                    old_statuses = [await status_for(session, k) for k in target.old_keys]
                    if new_status < 400 and all(s in (401, 403) for s in old_statuses):
                        outcome.seconds["verified"] = self.clock() - started
                        return
                    detail = (f"new key answered {new_status}, old key(s) answered "
                              f"{', '.join(str(s) for s in old_statuses)}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    detail = f"cannot reach {url}: {type(exc).__name__} {exc}".rstrip()
                if self.clock() > deadline:
                    outcome.failed_step = "verified"
                    outcome.failure = f"{url}: {detail}"
                    return
                await asyncio.sleep(POLL_SECONDS)
