"""A pretend vendor, "Acme Pay", with a key API shaped like real payment providers' APIs.

It is not the operator's protocol: that is the adapter's job to translate. Acme Pay
has restricted keys created with an admin secret, shows a key's secret once, and
"expires" (revokes) keys by id:

    POST /v1/restricted_keys             {"name", "permissions", "metadata"}
         -> 200 {"object": "restricted_key", "id": "rk_...", "secret": "acme_rk_..."}
    POST /v1/restricted_keys/{id}/expire -> 200 {"id", "expired": true} | 404
    GET  /v1/whoami  (Authorization: Bearer <restricted key>) -> 200 {"id", "permissions"} | 401

Run: VENDOR_SECRET_FILE=admin-secret python pretend_vendor.py --port 9000
"""

from __future__ import annotations

import argparse
import hmac
import os
import secrets
from dataclasses import dataclass, field

from aiohttp import web

PERMISSION_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_.")


@dataclass
class RestrictedKey:
    id: str
    secret: str = field(repr=False)
    name: str
    permissions: list[str]
    expired: bool = False


@dataclass
class Vendor:
    admin_secret: str = field(repr=False)
    keys: dict[str, RestrictedKey] = field(default_factory=dict)

    def admin(self, request: web.Request) -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.admin_secret}".encode())


VENDOR = web.AppKey("vendor", Vendor)


async def create_key(request: web.Request) -> web.Response:
    vendor = request.app[VENDOR]
    if not vendor.admin(request):
        return web.json_response({"error": {"type": "authentication_error"}}, status=401)
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": {"type": "invalid_request_error"}}, status=400)
    name, permissions = body.get("name"), body.get("permissions")
    if not isinstance(name, str) or not isinstance(permissions, list) or not all(
            isinstance(p, str) and p and set(p) <= PERMISSION_CHARS for p in permissions):
        return web.json_response({"error": {"type": "invalid_request_error"}}, status=400)
    key = RestrictedKey(id="rk_" + secrets.token_hex(8),
                        secret="acme_rk_" + secrets.token_urlsafe(32),
                        name=name, permissions=permissions)
    vendor.keys[key.id] = key
    return web.json_response({"object": "restricted_key", "id": key.id, "secret": key.secret,
                              "name": key.name, "permissions": key.permissions})


async def expire_key(request: web.Request) -> web.Response:
    vendor = request.app[VENDOR]
    if not vendor.admin(request):
        return web.json_response({"error": {"type": "authentication_error"}}, status=401)
    key = vendor.keys.get(request.match_info["id"])
    if key is None:
        return web.json_response({"error": {"type": "resource_missing"}}, status=404)
    key.expired = True
    return web.json_response({"id": key.id, "expired": True})


async def whoami(request: web.Request) -> web.Response:
    """What a service holding a restricted key would call: is this key still good?"""
    given = request.headers.get("Authorization", "").removeprefix("Bearer ")
    for key in request.app[VENDOR].keys.values():
        if not key.expired and hmac.compare_digest(key.secret.encode(), given.encode()):
            return web.json_response({"id": key.id, "permissions": key.permissions})
    return web.json_response({"error": {"type": "authentication_error"}}, status=401)


def create_app(admin_secret: str) -> web.Application:
    app = web.Application()
    app[VENDOR] = Vendor(admin_secret)
    app.router.add_post("/v1/restricted_keys", create_key)
    app.router.add_post("/v1/restricted_keys/{id}/expire", expire_key)
    app.router.add_get("/v1/whoami", whoami)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    with open(os.environ["VENDOR_SECRET_FILE"], encoding="utf-8") as handle:
        admin_secret = handle.read().strip()
    # No access log: it would show the key ids only, but keep the example quiet.
    web.run_app(create_app(admin_secret), host=args.host, port=args.port, access_log=None)


if __name__ == "__main__":
    main()
