"""An adapter between apikey-operator's webhook generator protocol and Acme Pay's key API.

The operator calls (docs/webhook-generator.md):

    POST   {base}/keys       mint a key for one ApiKey version (Idempotency-Key: <uid>-<version>)
    DELETE {base}/keys/{id}  revoke it (404: already gone)

and this adapter turns them into Acme Pay's `restricted_keys` calls (see
pretend_vendor.py). It owns three things the operator leaves to it: checking
the operator's bearer token, deciding which scopes a tenant may ask for, and
remembering idempotent answers across restarts (in SQLite here).

Settings (environment):
    ADAPTER_TOKEN_FILE   the bearer token the operator sends (the same value as the
                         operator's tokenSecret)
    VENDOR_URL           Acme Pay's API, e.g. https://api.acme-pay.example
    VENDOR_SECRET_FILE   Acme Pay's admin secret
    IDEMPOTENCY_DB       SQLite file for idempotency records (default ./idempotency.sqlite3).
                         It holds minted keys for a day: protect it like a Secret.
    ALLOWED_SCOPES       comma-separated scopes tenants may request (empty: any)
    TLS_CERT, TLS_KEY    serve https (the operator refuses plain http outside tests)

Run: python adapter.py --port 8443
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import sqlite3
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

logger = logging.getLogger("webhook-adapter")

BASE_PATH = "/v1"
IDEMPOTENCY_TTL_SECONDS = 24 * 3600
SCOPE = re.compile(r"[a-z][a-z0-9_]*(:[a-z][a-z0-9_]*)?")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9-]{1,200}")
KEY_ID = re.compile(r"rk_[0-9a-f]{1,64}")


@dataclass
class Settings:
    token: str = field(repr=False)
    vendor_url: str
    vendor_secret: str = field(repr=False)
    idempotency_db: str = "idempotency.sqlite3"
    allowed_scopes: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        def secret_file(variable: str) -> str:
            with open(env[variable], encoding="utf-8") as handle:
                value = handle.read().strip()
            if not value:
                raise SystemExit(f"{variable}: the file is empty")
            return value

        scopes = frozenset(s.strip() for s in env.get("ALLOWED_SCOPES", "").split(",")
                           if s.strip())
        return cls(token=secret_file("ADAPTER_TOKEN_FILE"),
                   vendor_url=env["VENDOR_URL"].rstrip("/"),
                   vendor_secret=secret_file("VENDOR_SECRET_FILE"),
                   idempotency_db=env.get("IDEMPOTENCY_DB", "idempotency.sqlite3"),
                   allowed_scopes=scopes)


class IdempotencyStore:
    """Successful mint answers by idempotency key, kept for a day, surviving restarts."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (idem TEXT PRIMARY KEY, "
                         "digest TEXT NOT NULL, answer TEXT NOT NULL, at REAL NOT NULL)")
        self._db.commit()
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, idem: str) -> asyncio.Lock:
        """One mint at a time per idempotency key, so two racing retries mint once."""
        return self._locks.setdefault(idem, asyncio.Lock())

    def get(self, idem: str) -> tuple[str, dict[str, str]] | None:
        self._db.execute("DELETE FROM answers WHERE at < ?",
                         (time.time() - IDEMPOTENCY_TTL_SECONDS,))
        row = self._db.execute("SELECT digest, answer FROM answers WHERE idem = ?",
                               (idem,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def put(self, idem: str, digest: str, answer: dict[str, str]) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                         (idem, digest, json.dumps(answer), time.time()))
        self._db.commit()
        self._locks.pop(idem, None)

    def close(self) -> None:
        self._db.close()


SETTINGS = web.AppKey("settings", Settings)
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyStore)
HTTP = web.AppKey("http", aiohttp.ClientSession)


def problem(status: int, reason: str, retry_after: str | None = None) -> web.Response:
    """An error answer. The operator reads only the status; `reason` is for humans."""
    headers = {"Retry-After": retry_after} if retry_after else None
    return web.json_response({"error": reason}, status=status, headers=headers)


def authorized(request: web.Request) -> bool:
    expected = f"Bearer {request.app[SETTINGS].token}".encode()
    return hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected)


def mint_request_problem(body: Any, allowed: frozenset[str]) -> tuple[int, str] | None:
    if not isinstance(body, dict):
        return 400, "the body must be a JSON object"
    for name, kind in (("namespace", str), ("name", str), ("uid", str), ("version", int),
                       ("scopes", list)):
        if not isinstance(body.get(name), kind):
            return 400, f"{name} is missing or of the wrong type"
    scopes = body["scopes"]
    if not all(isinstance(s, str) and SCOPE.fullmatch(s) for s in scopes):
        return 400, "scopes must look like resource:action"
    if allowed and not set(scopes) <= allowed:
        return 403, "a requested scope is not allowed through this adapter"
    return None


def vendor_failure(status: int, retry_after: str | None) -> web.Response:
    """Acme Pay's error, as the protocol's status (the operator decides from it alone)."""
    if status == 429:
        return problem(429, "the vendor is throttling", retry_after)
    if status in (401, 403):
        # Our own vendor credentials are wrong: not the operator's fault, and not fixed
        # by the operator's retries either; 502 makes it visible as an outage.
        logger.error("the vendor refused the adapter's admin secret (%d)", status)
        return problem(502, "the vendor refused the adapter's credentials")
    if status >= 500:
        return problem(503, "the vendor is unavailable", retry_after)
    return problem(422, f"the vendor refused the request ({status})")


async def mint(request: web.Request) -> web.Response:
    if not authorized(request):
        return problem(401, "unauthorized")
    idem = request.headers.get("Idempotency-Key", "")
    if not IDEMPOTENCY_KEY.fullmatch(idem):
        return problem(400, "Idempotency-Key is required")
    try:
        body = await request.json()
    except ValueError:
        return problem(400, "the body is not JSON")
    settings, store = request.app[SETTINGS], request.app[IDEMPOTENCY]
    found = mint_request_problem(body, settings.allowed_scopes)
    if found is not None:
        return problem(*found)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    async with store.lock(idem):
        known = store.get(idem)
        if known is not None:
            if known[0] != digest:
                return problem(422, "the Idempotency-Key was used for another request")
            return web.json_response(known[1], status=200)
        vendor_body = {
            "name": f"{body['namespace']}/{body['name']} v{body['version']}",
            # Acme Pay spells permissions resource.action; the operator's scopes use ':'.
            "permissions": [s.replace(":", ".") for s in body["scopes"]],
            "metadata": {"apikey_uid": body["uid"], "apikey_version": str(body["version"])},
        }
        try:
            async with request.app[HTTP].post(
                f"{settings.vendor_url}/v1/restricted_keys", json=vendor_body,
                headers={"Authorization": f"Bearer {settings.vendor_secret}",
                         "Idempotency-Key": idem},
            ) as response:
                if response.status >= 300:
                    return vendor_failure(response.status, response.headers.get("Retry-After"))
                created = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.warning("minting at the vendor failed: %s", type(exc).__name__)
            return problem(503, "the vendor is unreachable")
        answer = {"id": str(created["id"]), "key": str(created["secret"])}
        store.put(idem, digest, answer)
    logger.info("minted vendor key %s for %s/%s version %s", answer["id"], body["namespace"],
                body["name"], body["version"])
    return web.json_response(answer, status=201)


async def revoke(request: web.Request) -> web.Response:
    if not authorized(request):
        return problem(401, "unauthorized")
    key_id = request.match_info["id"]
    if not KEY_ID.fullmatch(key_id):
        return problem(404, "no such key")  # not one of ours: nothing to revoke
    settings = request.app[SETTINGS]
    try:
        async with request.app[HTTP].post(
            f"{settings.vendor_url}/v1/restricted_keys/{key_id}/expire",
            headers={"Authorization": f"Bearer {settings.vendor_secret}"},
        ) as response:
            if response.status == 404:
                return problem(404, "no such key")
            if response.status >= 300:
                return vendor_failure(response.status, response.headers.get("Retry-After"))
    except (aiohttp.ClientError, TimeoutError):
        return problem(503, "the vendor is unreachable")
    logger.info("revoked vendor key %s", key_id)
    return web.Response(status=204)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def create_app(settings: Settings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> Any:
        app[IDEMPOTENCY] = IdempotencyStore(settings.idempotency_db)
        app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=8))
        yield
        await app[HTTP].close()
        app[IDEMPOTENCY].close()

    app.cleanup_ctx.append(resources)
    app.router.add_post(f"{BASE_PATH}/keys", mint)
    app.router.add_delete(f"{BASE_PATH}/keys/{{id}}", revoke)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="0.0.0.0")  # a service in a pod: all interfaces
    parser.add_argument("--port", type=int, default=8443)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    tls = None
    if os.environ.get("TLS_CERT"):
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(os.environ["TLS_CERT"], os.environ["TLS_KEY"])
    # No access log: request lines carry vendor ids only, but the example stays quiet.
    web.run_app(create_app(Settings.from_env(os.environ)), host=args.host, port=args.port,
                ssl_context=tls, access_log=None)


if __name__ == "__main__":
    main()
