"""The webhook generator against the fake vendor directly: each call and failure asserted."""

from __future__ import annotations

import asyncio
import base64
import logging
import pathlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from apikey_operator.generators import GeneratorError, GeneratorUnavailable
from apikey_operator.generators.webhook import WebhookGenerator, parse_settings
from apikey_operator.keys import KeyFormat, has_valid_checksum
from apikey_operator.kube import KubeTransient
from apikey_operator.stores.base import KeyRef
from apikey_operator.testing.vendor import FakeVendor

pytestmark = pytest.mark.integration

REF = KeyRef("payments", "billing", "0b6c3a52-uid")
FMT = KeyFormat(24, "base62", "bill_")


class Sleeps:
    """An injected sleep: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


GeneratorMaker = Callable[..., WebhookGenerator]


@pytest.fixture
async def make(vendor: FakeVendor, token_file: pathlib.Path,
               sleeps: Sleeps) -> AsyncIterator[GeneratorMaker]:
    """Builds generators for the fake vendor (tokenFile, http) and closes them afterwards."""
    made: list[WebhookGenerator] = []

    def build(secrets: Any = None, **config: Any) -> WebhookGenerator:
        block = {"type": "webhook", "url": vendor.url, "allowInsecureHttp": True,
                 "tokenFile": str(token_file), **config}
        block = {k: v for k, v in block.items() if v is not None}
        generator = WebhookGenerator("vendor", parse_settings("vendor", block),
                                     "apikey-operator", secrets=secrets, sleep=sleeps,
                                     rng=lambda: 0.5)
        made.append(generator)
        return generator

    yield build
    for generator in made:
        await generator.close()


async def test_mint_sends_the_protocol_request_and_returns_the_vendor_key(
    make: GeneratorMaker, vendor: FakeVendor
) -> None:
    minted = await make().mint(REF, 3, FMT, ["a:read", "b:write"])
    [known] = vendor.minted()
    assert (minted.key, minted.external_id) == (known.key, known.id)
    assert has_valid_checksum(minted.key, "bill_")
    [call] = vendor.calls
    assert (call.method, call.path, call.status, call.authorized) == ("POST", "/keys", 201, True)
    assert call.idempotency_key == "0b6c3a52-uid-3"
    assert call.body == {"namespace": "payments", "name": "billing", "uid": "0b6c3a52-uid",
                         "version": 3, "scopes": ["a:read", "b:write"],
                         "format": {"length": 24, "encoding": "base62", "prefix": "bill_"}}


async def test_revoke_deletes_at_the_vendor_and_an_unknown_id_counts_as_revoked(
    make: GeneratorMaker, vendor: FakeVendor
) -> None:
    generator = make()
    minted = await generator.mint(REF, 1, FMT, [])
    await generator.revoke(REF, minted.external_id)
    await generator.revoke(REF, minted.external_id)  # twice: still fine
    await generator.revoke(REF, "key_unknown")
    assert vendor.keys[minted.external_id].revoked
    assert [(c.method, c.path, c.status) for c in vendor.calls_of("DELETE")] == [
        ("DELETE", f"/keys/{minted.external_id}", 204),
        ("DELETE", f"/keys/{minted.external_id}", 204),
        ("DELETE", "/keys/key_unknown", 404)]


async def test_a_stored_id_that_is_not_a_valid_id_is_never_sent(
    make: GeneratorMaker, vendor: FakeVendor
) -> None:
    with pytest.raises(GeneratorError, match="not a valid key id"):
        await make().revoke(REF, "../admin")
    assert vendor.calls == []


async def test_5xx_and_dropped_connections_are_retried_with_growing_backoff(
    make: GeneratorMaker, vendor: FakeVendor, sleeps: Sleeps
) -> None:
    vendor.fail_next(1, 500)
    vendor.fail_next(1, 502)
    minted = await make().mint(REF, 1, FMT, [])
    assert [c.status for c in vendor.calls] == [500, 502, 201]
    assert sleeps.delays == [0.375, 0.75]  # equal jitter at rng 0.5: 3/4 of 0.5s, 1s
    assert vendor.keys[minted.external_id].version == 1


async def test_a_dropped_connection_is_retried(make: GeneratorMaker, vendor: FakeVendor) -> None:
    vendor.drop_next(1)
    await make().mint(REF, 1, FMT, [])
    assert [c.status for c in vendor.calls] == [0, 201]


async def test_retries_stop_after_max_retries_with_generator_unavailable(
    make: GeneratorMaker, vendor: FakeVendor, sleeps: Sleeps
) -> None:
    vendor.fail_next(10, 503)
    with pytest.raises(GeneratorUnavailable, match=r"503 Service Unavailable \(after 3 attempts"):
        await make(maxRetries=2).mint(REF, 1, FMT, [])
    assert len(vendor.calls) == 3 and len(sleeps.delays) == 2
    assert vendor.minted() == []


async def test_a_short_retry_after_is_waited_and_a_long_one_is_handed_back(
    make: GeneratorMaker, vendor: FakeVendor, sleeps: Sleeps
) -> None:
    vendor.fail_next(1, 429, retry_after="2")
    await make().mint(REF, 1, FMT, [])
    assert sleeps.delays == [2.0]
    vendor.fail_next(1, 503, retry_after="120")
    with pytest.raises(GeneratorUnavailable) as info:
        await make().mint(REF, 2, FMT, [])
    assert info.value.retry_after == 120.0
    assert [c.status for c in vendor.calls] == [429, 201, 503]


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
async def test_a_refusal_is_a_generator_error_and_is_not_retried(
    make: GeneratorMaker, vendor: FakeVendor, status: int
) -> None:
    vendor.refuse(status, method="POST")
    with pytest.raises(GeneratorError) as info:
        await make().mint(REF, 1, FMT, [])
    assert not isinstance(info.value, GeneratorUnavailable)
    assert str(info.value).startswith(f"POST /keys answered {status} ")
    assert len(vendor.calls) == 1


async def test_a_refused_revoke_is_a_generator_error(make: GeneratorMaker,
                                                     vendor: FakeVendor) -> None:
    vendor.refuse(403, method="DELETE")
    with pytest.raises(GeneratorError, match=r"DELETE /keys/\{id\} answered 403 Forbidden"):
        await make().revoke(REF, "key_000001")


async def test_redirects_are_not_followed(make: GeneratorMaker, vendor: FakeVendor) -> None:
    vendor.fail_next(1, 307)
    with pytest.raises(GeneratorError, match="redirects are not followed"):
        await make().mint(REF, 1, FMT, [])
    assert len(vendor.calls) == 1


async def test_a_slow_vendor_times_out_as_unavailable(make: GeneratorMaker,
                                                      vendor: FakeVendor) -> None:
    vendor.slow(3.0)
    with pytest.raises(GeneratorUnavailable, match=r"timed out after 0.3s \(after 1 attempts"):
        await make(timeoutSeconds=0.3, maxRetries=0).mint(REF, 1, FMT, [])


async def test_a_retried_mint_after_a_lost_answer_returns_the_first_key(
    make: GeneratorMaker, vendor: FakeVendor
) -> None:
    vendor.lose_next_mint_answers(1)
    generator = make()
    minted = await generator.mint(REF, 1, FMT, [])
    again = await generator.mint(REF, 1, FMT, [])  # e.g. after an operator restart
    [known] = vendor.minted()
    assert minted.key == again.key == known.key
    assert [c.status for c in vendor.calls] == [502, 200, 200]
    assert {c.idempotency_key for c in vendor.calls} == {"0b6c3a52-uid-1"}
    other = await generator.mint(REF, 2, FMT, [])
    assert other.key != minted.key and len(vendor.minted()) == 2


async def test_a_401_rereads_the_token_file_once(make: GeneratorMaker, vendor: FakeVendor,
                                                 token_file: pathlib.Path) -> None:
    generator = make()
    await generator.mint(REF, 1, FMT, [])
    vendor.set_token("rotated-token")
    await asyncio.to_thread(token_file.write_text, "rotated-token\n", encoding="utf-8")
    await generator.mint(REF, 2, FMT, [])
    assert [(c.status, c.authorized) for c in vendor.calls] == [
        (201, True), (401, False), (201, True)]
    vendor.set_token("a-token-the-operator-does-not-have")
    with pytest.raises(GeneratorError, match="401 Unauthorized: the adapter refused the token"):
        await generator.mint(REF, 3, FMT, [])
    assert [c.status for c in vendor.calls[3:]] == [401, 401]


class FakeSecrets:
    """A SecretReader holding one token Secret; counts reads; can fail like the API."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.reads = 0
        self.transient = False

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.transient:
            raise KubeTransient("reading Secret: 503 Service Unavailable", 503, 4.0)
        if (namespace, name) != ("apikey-operator", "vendor-token"):
            return None
        return {"data": {"token": base64.b64encode(self.token.encode()).decode()}}


async def test_the_token_secret_is_cached_and_reread_after_a_401(
    make: GeneratorMaker, vendor: FakeVendor
) -> None:
    secrets = FakeSecrets(vendor.token)
    generator = make(secrets=secrets, tokenFile=None, tokenSecret={"name": "vendor-token"})
    await generator.mint(REF, 1, FMT, [])
    await generator.mint(REF, 2, FMT, [])
    assert secrets.reads == 1
    vendor.set_token("rotated")
    secrets.token = "rotated"
    await generator.mint(REF, 3, FMT, [])
    assert secrets.reads == 2
    assert [c.status for c in vendor.calls] == [201, 201, 401, 201]


async def test_token_secret_problems_are_mapped(make: GeneratorMaker, vendor: FakeVendor) -> None:
    secrets = FakeSecrets(vendor.token)
    missing = make(secrets=secrets, tokenFile=None, tokenSecret={"name": "other"})
    with pytest.raises(GeneratorError, match="apikey-operator/other does not exist"):
        await missing.mint(REF, 1, FMT, [])
    wrong_key = make(secrets=secrets, tokenFile=None,
                     tokenSecret={"name": "vendor-token", "key": "nope"})
    with pytest.raises(GeneratorError, match="has no key 'nope'"):
        await wrong_key.mint(REF, 1, FMT, [])
    secrets.transient = True
    flaky = make(secrets=secrets, tokenFile=None, tokenSecret={"name": "vendor-token"})
    with pytest.raises(GeneratorUnavailable) as info:
        await flaky.mint(REF, 1, FMT, [])
    assert info.value.retry_after == 4.0
    assert vendor.calls == []


async def test_tls_is_verified_against_the_ca_file_and_never_skipped(
    token_file: pathlib.Path, sleeps: Sleeps
) -> None:
    with FakeVendor(tls=True) as vendor:
        assert vendor.ca_file is not None
        base = {"type": "webhook", "url": vendor.url, "tokenFile": str(token_file)}
        trusted = WebhookGenerator("v", parse_settings("v", {**base, "caFile": vendor.ca_file}),
                                   "apikey-operator", sleep=sleeps)
        untrusted = WebhookGenerator("v", parse_settings("v", base), "apikey-operator",
                                     sleep=sleeps)
        try:
            minted = await trusted.mint(REF, 1, FMT, [])
            assert vendor.keys[minted.external_id].key == minted.key
            with pytest.raises(GeneratorError, match="TLS verification of the adapter failed"):
                await untrusted.mint(REF, 2, FMT, [])
        finally:
            await trusted.close()
            await untrusted.close()
        assert [c.status for c in vendor.calls] == [201]
        assert sleeps.delays == []


async def test_neither_keys_nor_the_token_reach_logs_or_error_messages(
    make: GeneratorMaker, vendor: FakeVendor, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    generator = make()
    errors: list[str] = []
    vendor.fail_next(1, 503)
    minted = await generator.mint(REF, 1, FMT, [])
    await generator.revoke(REF, minted.external_id)
    vendor.lose_next_mint_answers(1)
    await generator.mint(REF, 2, FMT, [])
    for status in (403, 401):
        vendor.refuse(status)
        try:
            await generator.mint(REF, 3, FMT, [])
        except GeneratorError as exc:
            errors.append(str(exc))
        vendor.stop_refusing()
    assert len(errors) == 2
    text = caplog.text + "\n".join(errors)
    assert "minted version 1 of payments/billing" in caplog.text
    for secret in {*vendor.all_keys(), vendor.token}:
        assert secret not in text
