"""A small Azure Key Vault (secrets) emulator for tests, run as its own process.

Stand-in for Lowkey Vault where its jar cannot be fetched (see
`apikey_operator.testing.servers.KeyVaultServer`). It speaks the part of the Key
Vault REST API that ``azure-keyvault-secrets`` uses for secrets, with the
semantics the store relies on, as Azure documents them:

* every request needs a bearer token; a request without one gets the 401
  challenge the SDK answers with a token from its credential;
* ``PUT /secrets/{name}`` adds a version (32 hex digits), ``GET
  /secrets/{name}/{version}`` reads one (``403 Forbidden`` for a disabled
  version: a disabled version cannot be read by anybody), ``GET
  /secrets/{name}/versions`` lists them, ``PATCH`` replaces a version's tags and
  attributes;
* soft delete: ``DELETE /secrets/{name}`` moves the secret to ``/deletedsecrets``,
  where it blocks its name (``409 Conflict``) until purged (``DELETE
  /deletedsecrets/{name}``) or recovered;
* a managed-identity token endpoint on a second, plain-HTTP port, in the App
  Service form that azure-identity's ``ManagedIdentityCredential`` (and so
  ``DefaultAzureCredential``) uses when ``IDENTITY_ENDPOINT`` and
  ``IDENTITY_HEADER`` are set;
* test controls on that port: ``POST /control/fail`` (the next N vault requests
  answer a status, with a Retry-After), ``POST /control/deny`` (every request is
  403 Forbidden until turned off).

Usage: ``python -m apikey_operator.testing.keyvault_emulator --port P
--identity-port Q --cert CERT --key KEY --token-secret S``. Everything is kept in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

IDENTITY_HEADER = "apikey-operator-test-identity"
TENANT = "00000000-0000-0000-0000-000000000000"
_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")


@dataclass
class _Version:
    id: str
    value: str
    content_type: str | None
    tags: dict[str, str]
    enabled: bool
    created: int
    updated: int


@dataclass
class _Secret:
    versions: list[_Version] = field(default_factory=list)
    deleted_at: int | None = None


class Vault:
    """The emulator's state; every method is called under `lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Key Vault names are case-insensitive: keyed by the lower-case name.
        self.secrets: dict[str, tuple[str, _Secret]] = {}
        # Tokens are "<nonce>.<HMAC of the nonce>": every emulator started with the same
        # --token-secret accepts the tokens any of them issued, as Entra ID tokens are
        # accepted by every vault (one identity endpoint serves several vaults).
        self.token_secret = b""
        self.fail_status = 0
        self.fail_count = 0
        self.fail_retry_after = 0
        self.deny = False
        self.requests = 0


def _bundle(base: str, name: str, version: _Version, *, value: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"{base}/secrets/{name}/{version.id}",
        "attributes": {
            "enabled": version.enabled,
            "created": version.created,
            "updated": version.updated,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 7,
        },
        "tags": dict(version.tags),
    }
    if version.content_type is not None:
        body["contentType"] = version.content_type
    if value:
        body["value"] = version.value
    return body


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def make_handler(vault: Vault, base_url: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return None
            try:
                return json.loads(raw)
            except ValueError:
                return None

        def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None,
                  ) -> None:
            payload = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def _route(self, method: str) -> None:
            body = self._body()
            parsed = urllib.parse.urlsplit(self.path)
            parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
            auth = self.headers.get("Authorization", "")
            with vault.lock:
                vault.requests += 1
                token = auth.removeprefix("Bearer ").strip()
                if not auth.startswith("Bearer ") or not _valid_token(vault, token):
                    self._send(401, _error("Unauthorized", "AKV10000: Request is missing a "
                                           "Bearer or PoP token."), {
                        "WWW-Authenticate": (
                            f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                            'resource="https://vault.azure.net"'
                        ),
                    })
                    return
                if vault.deny:
                    self._send(403, _error("Forbidden", "The user, group or application does "
                                           "not have secrets permissions on key vault."))
                    return
                if vault.fail_count > 0:
                    vault.fail_count -= 1
                    headers = {}
                    if vault.fail_retry_after:
                        headers["Retry-After"] = str(vault.fail_retry_after)
                    code = "Throttled" if vault.fail_status == 429 else "InternalError"
                    self._send(vault.fail_status, _error(code, "try again later"), headers)
                    return
                status, answer = self._dispatch(method, parts, body)
            self._send(status, answer)

        def _dispatch(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
            now = int(time.time())
            if len(parts) >= 2 and parts[0] == "secrets":
                name = parts[1]
                if not _NAME.fullmatch(name):
                    return 400, _error("BadParameter", "The secret name is invalid.")
                entry = vault.secrets.get(name.lower())
                if method == "PUT" and len(parts) == 2:
                    if entry is not None and entry[1].deleted_at is not None:
                        return 409, _error("Conflict", f"Secret {name} is currently in a "
                                           "deleted but recoverable state.")
                    if not isinstance(body, dict) or not isinstance(body.get("value"), str):
                        return 400, _error("BadParameter", "value is required")
                    if entry is None:
                        entry = (name, _Secret())
                        vault.secrets[name.lower()] = entry
                    attributes = body.get("attributes") or {}
                    version = _Version(
                        id=secrets.token_hex(16), value=body["value"],
                        content_type=body.get("contentType"),
                        tags={str(k): str(v) for k, v in (body.get("tags") or {}).items()},
                        enabled=bool(attributes.get("enabled", True)), created=now, updated=now,
                    )
                    entry[1].versions.append(version)
                    return 200, _bundle(base_url, entry[0], version, value=True)
                if entry is None or entry[1].deleted_at is not None:
                    return 404, _error("SecretNotFound", f"A secret with (name/id) {name} "
                                       "was not found in this key vault.")
                stored_name, secret = entry
                if method == "GET" and len(parts) == 3 and parts[2] == "versions":
                    items = [_bundle(base_url, stored_name, v, value=False)
                             for v in secret.versions]
                    return 200, {"value": items, "nextLink": None}
                if method == "DELETE" and len(parts) == 2:
                    secret.deleted_at = now
                    latest = _bundle(base_url, stored_name, secret.versions[-1], value=False)
                    return 200, {**latest, **self._deleted_fields(stored_name, now)}
                wanted = parts[2] if len(parts) == 3 else ""
                found = secret.versions[-1] if not wanted else next(
                    (v for v in secret.versions if v.id == wanted), None)
                if found is None:
                    return 404, _error("SecretNotFound", f"A secret with (name/id) "
                                       f"{name}/{wanted} was not found in this key vault.")
                if method == "GET":
                    if not found.enabled:
                        return 403, _error("Forbidden", "Operation get is not allowed on a "
                                           "disabled secret.")
                    return 200, _bundle(base_url, stored_name, found, value=True)
                if method == "PATCH":
                    if not isinstance(body, dict):
                        return 400, _error("BadParameter", "a body is required")
                    if "tags" in body and body["tags"] is not None:
                        found.tags = {str(k): str(v) for k, v in body["tags"].items()}
                    if "contentType" in body and body["contentType"] is not None:
                        found.content_type = body["contentType"]
                    attributes = body.get("attributes") or {}
                    if attributes.get("enabled") is not None:
                        found.enabled = bool(attributes["enabled"])
                    found.updated = now
                    return 200, _bundle(base_url, stored_name, found, value=False)
            if len(parts) == 2 and parts[0] == "deletedsecrets":
                entry = vault.secrets.get(parts[1].lower())
                if entry is None or entry[1].deleted_at is None:
                    return 404, _error("SecretNotFound", f"Deleted Secret not found: {parts[1]}")
                stored_name, secret = entry
                if method == "GET":
                    latest = _bundle(base_url, stored_name, secret.versions[-1], value=False)
                    return 200, {**latest,
                                 **self._deleted_fields(stored_name, secret.deleted_at or 0)}
                if method == "DELETE":
                    del vault.secrets[parts[1].lower()]
                    return 204, None
            if len(parts) == 3 and parts[0] == "deletedsecrets" and parts[2] == "recover":
                entry = vault.secrets.get(parts[1].lower())
                if method == "POST" and entry is not None and entry[1].deleted_at is not None:
                    entry[1].deleted_at = None
                    return 200, _bundle(base_url, entry[0], entry[1].versions[-1], value=False)
                return 404, _error("SecretNotFound", f"Deleted Secret not found: {parts[1]}")
            return 400, _error("BadParameter", f"unsupported {method} {'/'.join(parts)}")

        def _deleted_fields(self, name: str, when: int) -> dict[str, Any]:
            return {"recoveryId": f"{base_url}/deletedsecrets/{name}", "deletedDate": when,
                    "scheduledPurgeDate": when + 7 * 86400}

        def do_GET(self) -> None:
            self._route("GET")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_PATCH(self) -> None:
            self._route("PATCH")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler


def _issue_token(vault: Vault) -> str:
    nonce = secrets.token_urlsafe(18)
    mac = hmac.new(vault.token_secret, nonce.encode(), hashlib.sha256).hexdigest()
    return f"{nonce}.{mac}"


def _valid_token(vault: Vault, token: str) -> bool:
    nonce, _, mac = token.partition(".")
    expected = hmac.new(vault.token_secret, nonce.encode(), hashlib.sha256).hexdigest()
    return bool(nonce) and hmac.compare_digest(mac, expected)


def make_identity_handler(vault: Vault) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(parsed.query)
            if parsed.path == "/health":
                self._send(200, {"ok": True})
                return
            if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
                self._send(401, {"error": "invalid identity header"})
                return
            token = _issue_token(vault)
            resource = (query.get("resource") or [""])[0]
            self._send(200, {"access_token": token, "expires_on": str(int(time.time()) + 3600),
                             "resource": resource, "token_type": "Bearer"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            path = urllib.parse.urlsplit(self.path).path
            with vault.lock:
                if path == "/control/fail":
                    vault.fail_status = int(body.get("status", 503))
                    vault.fail_count = int(body.get("count", 1))
                    vault.fail_retry_after = int(body.get("retryAfter", 0))
                elif path == "/control/deny":
                    vault.deny = bool(body.get("deny", True))
                else:
                    self._send(404, {"error": "unknown control"})
                    return
                requests = vault.requests
            self._send(200, {"requests": requests})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--identity-port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token-secret", required=True)
    args = parser.parse_args(argv)
    vault = Vault()
    vault.token_secret = args.token_secret.encode()
    base_url = f"https://{args.host}:{args.port}"
    server = ThreadingHTTPServer((args.host, args.port), make_handler(vault, base_url))
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    # The handshake happens on the handler's first read, in its own thread, so a client
    # that connects and says nothing cannot block the accept loop.
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )
    identity = ThreadingHTTPServer((args.host, args.identity_port), make_identity_handler(vault))
    identity.daemon_threads = True
    threading.Thread(target=identity.serve_forever, daemon=True).start()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
