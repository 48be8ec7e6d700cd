"""An example HTTP service that accepts API keys through KeyRing.

It mounts the ApiKey's Secret as a volume and accepts the current key and,
during a rotation's grace period, the previous one. It picks up rotations from
the volume by itself: no restart, no Kubernetes API access.

    python service.py --keys-dir /etc/apikeys/billing --port 8080
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

from apikey_operator.client import KeyRing, key_from_headers

logger = logging.getLogger("billing-api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RING: web.AppKey[KeyRing] = web.AppKey("ring", KeyRing)
PUBLIC_PATHS = frozenset({"/healthz"})


@web.middleware
async def require_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse every request but the public ones unless it carries a valid key."""
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    presented = key_from_headers(request.headers)
    if presented is None or not request.app[RING].verify(presented):
        # Never log the presented value: a near-miss could be a real key of another service.
        logger.info("refused %s %s from %s", request.method, request.path, request.remote)
        raise web.HTTPUnauthorized(
            text="a valid API key is required\n",
            headers={"WWW-Authenticate": 'Bearer realm="billing-api"'},
        )
    return await handler(request)


async def invoices(request: web.Request) -> web.Response:
    return web.json_response({"invoices": [{"id": "inv-1", "amount": 4200}]})


async def healthz(request: web.Request) -> web.Response:
    ring = request.app[RING]
    return web.json_response({"ok": ring.has_current, "grace": ring.has_previous})


def make_app(ring: KeyRing) -> web.Application:
    app = web.Application(middlewares=[require_api_key])
    app[RING] = ring
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/invoices", invoices)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys-dir", default=os.environ.get("KEYS_DIR", "/etc/apikeys/billing"))
    parser.add_argument("--current-key", default="api-key")
    parser.add_argument("--previous-key", default="api-key-previous")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ring = KeyRing.from_directory(
        args.keys_dir, current_key=args.current_key, previous_key=args.previous_key
    )
    web.run_app(make_app(ring), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
