"""The store contract suite runs once per backend named in STORE_BACKENDS.

A backend is a ``store_backend_<name>`` fixture returning a
`tests.support.store_backends.StoreBackend`; adding one is adding its
name here.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from apikey_operator.keys import KeyFormat, generate
from apikey_operator.rotation import CreatePending, Trigger
from apikey_operator.stores.base import KeyRef, VersionDocument
from tests.support.fixtures_stores import (  # noqa: F401 (fixtures)
    aws_test_credentials,
    azure_test_identity,
    counting_store,
    keyvault_server,
    make_store,
    moto_server,
    openbao_server,
    openbao_token_file,
    store_backend,
    store_backend_aws,
    store_backend_azure,
    store_backend_vault,
)
from tests.support.store_backend_kubernetes import (  # noqa: F401 (fixture)
    store_backend_kubernetes,
)
from tests.support.store_backends import StoreBackend

STORE_BACKENDS = ["kubernetes", "vault", "aws", "azure"]


@pytest.fixture(params=STORE_BACKENDS)
def backend(request: pytest.FixtureRequest) -> StoreBackend:
    """Each contract test runs against every backend."""
    found: StoreBackend = request.getfixturevalue(f"store_backend_{request.param}")
    return found


CREATED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GRACE_END = datetime(2026, 1, 3, 3, 4, 5, tzinfo=UTC)


def new_ref(namespace: str = "payments", name: str = "billing-client") -> KeyRef:
    return KeyRef(namespace=namespace, name=name, uid=str(uuid.uuid4()))


def new_doc(
    version: int,
    *,
    handles: dict[str, str] | None = None,
    scopes: tuple[str, ...] = ("invoices:read",),
    fmt: KeyFormat | None = None,
) -> VersionDocument:
    """A version shaped exactly as the operator writes one: built by the plan's own step."""
    fmt = fmt or KeyFormat(length=24, encoding="base62", prefix="bill_")
    trigger: Trigger = ("initial" if version == 1 else
                        "revoke" if "revoke" in (handles or {}) else "rotate")
    step = CreatePending(version=version, created_at=CREATED, key_format=fmt, scopes=scopes,
                         handles=dict(handles or {}), trigger=trigger)
    return step.document(generate(fmt))
