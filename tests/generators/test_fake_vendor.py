"""The fake vendor's own protocol checks, seen from a plain HTTP client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from apikey_operator import keys
from apikey_operator.testing.vendor import FakeVendor

pytestmark = pytest.mark.integration

BODY = {"namespace": "payments", "name": "billing", "uid": "u1", "version": 1, "scopes": [],
        "format": {"length": 16, "encoding": "hex", "prefix": ""}}


def call(vendor: FakeVendor, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(vendor.url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {vendor.token}", "Content-Type": "application/json",
        **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
            return int(response.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_mint_uses_the_vendor_prefix_and_replays_by_idempotency_key(vendor: FakeVendor) -> None:
    status, first = call(vendor, "POST", "/keys", BODY, {"Idempotency-Key": "u1-1"})
    assert status == 201
    assert keys.matches_format(first["key"], keys.KeyFormat(16, "hex", "vnd_"))
    assert call(vendor, "POST", "/keys", BODY, {"Idempotency-Key": "u1-1"}) == (200, first)
    changed = {**BODY, "scopes": ["x:y"]}
    assert call(vendor, "POST", "/keys", changed, {"Idempotency-Key": "u1-1"})[0] == 422
    assert len(vendor.minted()) == 1


@pytest.mark.parametrize(("body", "headers", "status"), [
    (BODY, {}, 400),
    ({**BODY, "version": "1"}, {"Idempotency-Key": "k"}, 400),
    ({**BODY, "format": {"length": 16}}, {"Idempotency-Key": "k"}, 400),
    (BODY, {"Idempotency-Key": "k", "Authorization": "Bearer wrong"}, 401),
], ids=["no idempotency key", "a string version", "an incomplete format", "a wrong token"])
def test_bad_mints_are_refused_and_recorded(vendor: FakeVendor, body: Any,
                                            headers: dict[str, str], status: int) -> None:
    assert call(vendor, "POST", "/keys", body, headers)[0] == status
    [recorded] = vendor.calls
    assert recorded.status == status and vendor.minted() == []


def test_calls_are_recorded_without_the_token_or_keys(vendor: FakeVendor) -> None:
    _, minted = call(vendor, "POST", "/keys", BODY, {"Idempotency-Key": "u1-1"})
    assert call(vendor, "DELETE", f"/keys/{minted['id']}") == (204, None)
    assert call(vendor, "DELETE", "/keys/nope")[0] == 404
    assert call(vendor, "GET", "/keys")[0] == 404
    text = repr(vendor.calls)
    assert minted["key"] not in text and vendor.token not in text
    assert [(c.method, c.status, c.key_id) for c in vendor.calls] == [
        ("POST", 201, minted["id"]), ("DELETE", 204, minted["id"]), ("DELETE", 404, "nope"),
        ("GET", 404, None)]
    assert "authorization" in vendor.calls[0].headers
    assert vendor.calls[0].body == BODY


def test_switches_apply_in_order_and_only_to_their_method(vendor: FakeVendor) -> None:
    vendor.fail_next(1, 500, method="DELETE")
    vendor.fail_next(1, 429, retry_after="3")
    assert call(vendor, "POST", "/keys", BODY, {"Idempotency-Key": "a"})[0] == 429
    assert call(vendor, "DELETE", "/keys/x")[0] == 500
    assert call(vendor, "DELETE", "/keys/x")[0] == 404
    vendor.refuse(403, method="POST")
    assert call(vendor, "POST", "/keys", BODY, {"Idempotency-Key": "a"})[0] == 403
    vendor.stop_refusing()
    assert call(vendor, "POST", "/keys", BODY, {"Idempotency-Key": "a"})[0] == 201
