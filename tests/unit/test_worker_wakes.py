"""When a key's worker runs again: the echo of its own Secret write, delivered by the watch
before the write's response, is no reason for a second pass; anything else is."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from apikey_operator.handlers import Worker
from apikey_operator.reconciler import SecretCache, secret_digest

pytestmark = pytest.mark.unit


def secret(version: int, value: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "payments", "name": "billing",
                         "resourceVersion": str(version)},
            "data": {"api-key": base64.b64encode(value.encode()).decode()}}


def worker_mid_pass() -> Worker:
    worker = Worker(namespace="payments", name="billing", secret_name="billing")
    worker.busy = True
    return worker


def test_the_echo_of_the_passes_own_write_does_not_wake_the_key() -> None:
    cache, worker = SecretCache(), worker_mid_pass()
    written = secret(7, "k1")
    cache.observed(written)          # the watch's echo, before the create's response...
    worker.secret_changed()
    cache.observed(written)          # ...and the response itself
    worker.busy, worker.secret_digest = False, secret_digest(written["data"])
    worker.after_pass(cache)
    assert not worker.woken


def test_a_change_by_someone_else_during_the_pass_wakes_the_key() -> None:
    cache, worker = SecretCache(), worker_mid_pass()
    ours = secret(7, "k1")
    cache.observed(ours)
    cache.observed(secret(8, "edited by hand"))
    worker.secret_changed()
    worker.busy, worker.secret_digest = False, secret_digest(ours["data"])
    worker.after_pass(cache)
    assert worker.woken


def test_a_deletion_during_the_pass_wakes_the_key() -> None:
    cache, worker = SecretCache(), worker_mid_pass()
    ours = secret(7, "k1")
    cache.observed(ours)
    cache.observed(secret(9, "k1"), deleted=True)
    worker.secret_changed()
    worker.busy, worker.secret_digest = False, secret_digest(ours["data"])
    worker.after_pass(cache)
    assert worker.woken


def test_a_secret_event_between_passes_wakes_at_once() -> None:
    worker = Worker(namespace="payments", name="billing", secret_name="billing")
    worker.secret_changed()
    assert worker.woken and not worker.secret_event
