"""An example client that calls the service with a key from ApiKeyProvider.

It reads the key from its own mount of the ApiKey's Secret, caches it for a
short TTL, and handles a rotation without a restart:

* refused with the cached key -> forget the cache and read the key again (the
  Secret changed since it was cached);
* refused with the fresh current key -> use the previous key while it is still
  mounted: the service's pod may see the rotated Secret a little later than ours,
  and during the grace period the service still accepts the previous key.

    python client.py --url http://billing-api.payments.svc:8080/invoices \
        --keys-dir /etc/apikeys/billing
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

from apikey_operator.client import (
    ApiKeyProvider,
    MountedSecretSource,
    SourceUnavailable,
)
from apikey_operator.keys import fingerprint

logger = logging.getLogger("billing-client")


@dataclass
class Stats:
    """What a run did. Keys are counted by fingerprint, never kept."""

    ok: int = 0
    failed: int = 0
    retried: int = 0
    keys_used: Counter[str] = field(default_factory=Counter)


class BillingClient:
    """Calls `url` with the current key, falling back as the module docstring says."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        current: ApiKeyProvider,
        previous: ApiKeyProvider | None = None,
    ) -> None:
        self.session = session
        self.url = url
        self.current = current
        self.previous = previous
        self.stats = Stats()

    async def call(self) -> bool:
        """One logical request; True if the service accepted it."""
        try:
            key = await self.current.aget()
        except SourceUnavailable as exc:
            logger.warning("no API key: %s", exc)
            self.stats.failed += 1
            return False
        if await self._send(key):
            return True
        self.stats.retried += 1
        tried = {key}
        for provider in (self.current, self.previous):
            candidate = await self._fresh(provider)
            if candidate is None or candidate in tried:
                continue
            tried.add(candidate)
            if await self._send(candidate):
                return True
        self.stats.failed += 1
        logger.warning("the service refused every key we have")
        return False

    @staticmethod
    async def _fresh(provider: ApiKeyProvider | None) -> str | None:
        """The provider's key read anew, None if it has none (no previous key
        outside a grace period)."""
        if provider is None:
            return None
        provider.invalidate()
        try:
            return await provider.aget()
        except SourceUnavailable:
            return None

    async def _send(self, key: str) -> bool:
        headers = {"Authorization": f"Bearer {key}"}
        async with self.session.get(self.url, headers=headers) as response:
            await response.read()
            if response.status == 200:
                self.stats.ok += 1
                self.stats.keys_used[fingerprint(key)] += 1
                return True
            if response.status == 401:
                return False
            response.raise_for_status()
            return False


def providers_for(directory: str, ttl: float) -> tuple[ApiKeyProvider, ApiKeyProvider]:
    """The current key (cached for `ttl`) and the previous key (read when needed)."""
    current = ApiKeyProvider(MountedSecretSource(directory, key="api-key"), ttl=ttl)
    previous = ApiKeyProvider(
        MountedSecretSource(directory, key="api-key-previous"), ttl=ttl, retry_interval=0
    )
    return current, previous


async def run(
    url: str, directory: str, ttl: float, interval: float, count: int, stop: asyncio.Event
) -> Stats:
    """Call the service every `interval` seconds, `count` times (0: until `stop` is set)."""
    current, previous = providers_for(directory, ttl)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = BillingClient(session, url, current, previous)
        done = 0
        while not stop.is_set() and (count == 0 or done < count):
            try:
                await client.call()
            except aiohttp.ClientError as exc:
                client.stats.failed += 1
                logger.warning("request failed: %s", type(exc).__name__)
            done += 1
            await asyncio.sleep(interval)
        return client.stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=os.environ.get("BILLING_URL", "http://billing-api:8080/invoices")
    )
    parser.add_argument("--keys-dir", default=os.environ.get("KEYS_DIR", "/etc/apikeys/billing"))
    parser.add_argument("--ttl", type=float, default=60.0, help="seconds to cache the key")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=0, help="0: run until stopped")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stats = asyncio.run(
        run(args.url, args.keys_dir, args.ttl, args.interval, args.count, asyncio.Event())
    )
    logger.info("done: %d ok, %d failed, %d retried", stats.ok, stats.failed, stats.retried)
    raise SystemExit(1 if stats.failed else 0)


if __name__ == "__main__":
    main()
