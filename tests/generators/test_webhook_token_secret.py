"""The bearer token from a Secret in the operator's namespace, re-read when the vendor says 401."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from apikey_operator.testing.harness import OPERATOR_NAMESPACE, SECRETS, LocalCluster
from apikey_operator.testing.vendor import FakeVendor
from tests.generators.helpers import current, vendor_apikey, version

pytestmark = pytest.mark.integration

TOKEN_SECRET = "vendor-token"


@pytest.fixture
def generator_config(vendor: FakeVendor) -> dict[str, Any]:
    return {"type": "webhook", "url": vendor.url, "allowInsecureHttp": True,
            "tokenSecret": {"name": TOKEN_SECRET, "key": "token"}, "maxRetries": 1}


def token_secret(token: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": TOKEN_SECRET, "namespace": OPERATOR_NAMESPACE},
            "data": {"token": base64.b64encode(token.encode()).decode()}}


def test_the_token_is_read_from_the_secret_and_reread_after_a_401(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    cluster.apply(token_secret(vendor.token))
    cluster.apply(vendor_apikey("billing"))
    cluster.wait_ready("payments", "billing")
    first = current(cluster)
    # The platform team rotates the adapter's token: the vendor side and the Secret.
    vendor.set_token("vendor-token-rotated")
    cluster.api.patch_object(SECRETS, OPERATOR_NAMESPACE, TOKEN_SECRET,
                             {"data": token_secret("vendor-token-rotated")["data"]})
    cluster.annotate("payments", "billing", {"apikeys.dev/rotate": "r1"})
    cluster.wait_for(lambda: version(cluster) == 2, what="the rotation with the new token")
    assert cluster.secret_data("payments", "billing")["api-key-previous"] == first
    posts = vendor.calls_of("POST")
    assert [(c.status, c.authorized) for c in posts] == [(201, True), (401, False), (201, True)]
    assert "RotationFailed" not in cluster.event_reasons("payments", "billing")


def test_a_missing_token_secret_is_a_rotation_failure_that_names_the_secret(
    cluster: LocalCluster, vendor: FakeVendor
) -> None:
    cluster.apply(vendor_apikey("billing"))
    cond = cluster.wait_reason("payments", "billing", "RotationFailed")
    assert f"{OPERATOR_NAMESPACE}/{TOKEN_SECRET} does not exist" in cond["message"]
    assert vendor.calls == []
    assert cluster.secret("payments", "billing") is None
