"""An example HTTP service that accepts API keys through KeyRing.

It mounts the ApiKey's Secret as a volume and accepts the current key and,
during a rotation's grace period, the previous one. It picks up rotations from
the volume by itself: no restart, no Kubernetes API access.

It counts what it verifies, by key fingerprint (never the key), and serves the
counts on /metrics (`apikey_keyring_verifications_total`): the operator reads
them from Prometheus to end a grace early once the previous key is unused.
`--no-metrics` turns that off.

    python service.py --keys-dir /etc/apikeys/billing --port 8080
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from apikey_operator.client import KeyRing, key_from_headers

logger = logging.getLogger("billing-api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RING: web.AppKey[KeyRing] = web.AppKey("ring", KeyRing)
METRICS: web.AppKey[CollectorRegistry] = web.AppKey("metrics", CollectorRegistry)
PUBLIC_PATHS = frozenset({"/healthz", "/metrics"})


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


async def metrics(request: web.Request) -> web.Response:
    # Fingerprints and counts only: nothing here is a key.
    body = generate_latest(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(ring: KeyRing, registry: CollectorRegistry | None = None) -> web.Application:
    app = web.Application(middlewares=[require_api_key])
    app[RING] = ring
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/invoices", invoices)
    if registry is not None:
        app[METRICS] = registry
        app.router.add_get("/metrics", metrics)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys-dir", default=os.environ.get("KEYS_DIR", "/etc/apikeys/billing"))
    parser.add_argument("--current-key", default="api-key")
    parser.add_argument("--previous-key", default="api-key-previous")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--no-metrics", action="store_true",
                        help="do not count verifications or serve /metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    registry = None if args.no_metrics else CollectorRegistry()
    ring = KeyRing.from_directory(
        args.keys_dir, current_key=args.current_key, previous_key=args.previous_key,
        metrics=registry if registry is not None else False,
    )
    web.run_app(make_app(ring, registry), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
