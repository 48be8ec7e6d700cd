"""What the operator registers with kopf, where a registration decides how it scales."""

from __future__ import annotations

import kopf
import pytest

from apikey_operator import handlers
from apikey_operator.config import Settings

pytestmark = pytest.mark.unit


def test_no_kopf_index_covers_the_apikeys() -> None:
    # After a start, kopf holds every object of an indexed kind until all of them are indexed:
    # each waits on one condition that every new object notifies (quadratic in the objects),
    # and above `queueing.worker_limit` the wait never ends (kopf#1243). ApiKeys are the kind
    # that numbers in the thousands; their per-policy count is kept from their events instead.
    indexed = {handler.selector.any_name
               for handler in kopf.get_default_registry()._indexing.get_all_handlers()}
    assert "apikeys" not in indexed
    assert indexed == {"rotationpolicies", "namespaces"}


async def test_kopf_runs_every_object_worker_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A limit would let the workers waiting for the indexes of namespaces or policies hold
    # every slot while the objects they wait for cannot start (kopf#1243).
    async def no_watch(_operator: handlers.Operator, _namespace: str | None) -> None:
        return None

    monkeypatch.setattr(handlers, "_watch_secrets", no_watch)
    operator = handlers.build_operator(Settings(standalone=True))
    settings = kopf.OperatorSettings()
    settings.queueing.worker_limit = 5
    await handlers.startup(settings=settings, memo=operator.memo())
    for task in operator.secret_watches:
        await task
    assert settings.queueing.worker_limit is None
    assert settings.persistence.finalizer == handlers.FINALIZER
