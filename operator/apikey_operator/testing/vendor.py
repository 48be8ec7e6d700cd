"""A fake key vendor speaking the webhook generator protocol, for tests and demos.

`FakeVendor` is a real HTTP(S) server on a free loopback port, in a thread. It
mints prefixed keys in the project's own format (so the leak scans recognise
them), honours `Idempotency-Key` (a replayed mint answers the first key again),
checks the bearer token, and records every call: method, path, JSON body (the
protocol's requests never carry keys), which headers were present, the
idempotency key and the status it answered. It never records the token or a
key in `calls`.

Switches, all thread-safe: `fail_next` (the next N calls answer a status, with
an optional Retry-After), `lose_next_mint_answers` (mint for real, then answer
502, as if the answer was lost), `drop_next` (close the connection without an
answer), `refuse` (answer a status until `stop_refusing`), `slow` (wait before
answering), `set_token` (the token it accepts).
"""

from __future__ import annotations

import datetime
import http.server
import itertools
import json
import pathlib
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, cast

from apikey_operator import keys
from apikey_operator.testing.servers import free_port

T = TypeVar("T")
DEFAULT_TOKEN = "vendor-test-token"
DEFAULT_PREFIX = "vnd_"
Method = Literal["POST", "DELETE"]


@dataclass(frozen=True)
class VendorCall:
    """One request as the vendor saw it (never the token, never a key)."""

    method: str
    path: str
    body: Any
    headers: frozenset[str]  # lower-cased names of the headers present
    idempotency_key: str | None
    authorized: bool
    status: int
    key_id: str | None = None


@dataclass
class VendorKey:
    """A key the vendor minted; `key` is the material (tests compare it, never print it)."""

    id: str
    key: str = field(repr=False)
    namespace: str
    name: str
    uid: str
    version: int
    scopes: tuple[str, ...]
    idempotency_key: str
    revoked: bool = False


@dataclass
class _Failure:
    status: int
    retry_after: str | None
    method: str | None


class FakeVendor:
    """The protocol's vendor side; `url` once started. Use as a context manager."""

    def __init__(self, *, token: str = DEFAULT_TOKEN, prefix: str = DEFAULT_PREFIX,
                 tls: bool = False) -> None:
        self._lock = threading.Lock()
        self._token = token
        self.prefix = prefix
        self.tls = tls
        self.calls: list[VendorCall] = []
        self.keys: dict[str, VendorKey] = {}
        self._by_idempotency: dict[str, tuple[str, str]] = {}  # idem key -> (body digest, id)
        self._failures: list[_Failure] = []
        self._lose_mint_answers = 0
        self._drops = 0
        self._refusing: dict[str | None, int] = {}
        self._delay: dict[str | None, float] = {}
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_file: str | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self.port = free_port()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        server.daemon_threads = True
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="fake-vendor-tls-")
            cert, key, ca = _write_tls_files(pathlib.Path(self._tmp.name))
            self.ca_file = str(ca)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-vendor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- switches ------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        """The bearer token accepted now (tests write it where the operator reads it)."""
        with self._lock:
            return self._token

    def set_token(self, token: str) -> None:
        with self._lock:
            self._token = token

    def fail_next(self, count: int, status: int = 503, *, retry_after: str | None = None,
                  method: Method | None = None) -> None:
        """The next `count` calls (of `method`, if given) answer `status` without acting."""
        with self._lock:
            self._failures.extend(_Failure(status, retry_after, method) for _ in range(count))

    def lose_next_mint_answers(self, count: int = 1) -> None:
        """The next `count` mints happen, then answer 502 as if a proxy lost the answer."""
        with self._lock:
            self._lose_mint_answers += count

    def drop_next(self, count: int = 1) -> None:
        """The next `count` calls get their connection closed without an answer."""
        with self._lock:
            self._drops += count

    def refuse(self, status: int = 403, method: Method | None = None) -> None:
        """Answer `status` to every call (of `method`) until `stop_refusing`."""
        with self._lock:
            self._refusing[method] = status

    def stop_refusing(self) -> None:
        with self._lock:
            self._refusing.clear()

    def slow(self, seconds: float, method: Method | None = None) -> None:
        """Wait `seconds` before answering calls (of `method`); 0 turns it off."""
        with self._lock:
            self._delay[method] = seconds

    # --- reading what happened -----------------------------------------------------------------

    def calls_of(self, method: Method) -> list[VendorCall]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def minted(self) -> list[VendorKey]:
        with self._lock:
            return list(self.keys.values())

    def active(self) -> list[VendorKey]:
        return [k for k in self.minted() if not k.revoked]

    def key_by_value(self, key: str) -> VendorKey | None:
        return next((k for k in self.minted() if keys.keys_equal(k.key, key)), None)

    def all_keys(self) -> set[str]:
        return {k.key for k in self.minted()}

    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 20.0,
                 what: str = "condition") -> T:
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    # --- request handling (server threads) -----------------------------------------------------

    def _plan(self, method: str) -> tuple[str, Any]:
        """What to do before looking at the request: ('drop'|'fail'|'refuse'|'go', detail)."""
        with self._lock:
            delay = self._delay.get(method, self._delay.get(None, 0.0))
            if self._drops:
                self._drops -= 1
                return "drop", delay
            for i, failure in enumerate(self._failures):
                if failure.method in (None, method):
                    del self._failures[i]
                    return "fail", (failure, delay)
            refusing = self._refusing.get(method, self._refusing.get(None))
            if refusing is not None:
                return "refuse", (refusing, delay)
            return "go", delay

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _record(self, call: VendorCall) -> None:
        with self._lock:
            self.calls.append(call)

    def _authorized(self, header: str | None) -> bool:
        with self._lock:
            expected = f"Bearer {self._token}"
        return header is not None and keys.keys_equal(header, expected)

    def _mint(self, body: Any, idem: str) -> tuple[int, dict[str, Any]]:
        problem = _mint_problem(body)
        if problem:
            return 400, {"error": problem}
        digest = json.dumps(body, sort_keys=True)
        with self._lock:
            seen = self._by_idempotency.get(idem)
            if seen is not None:
                if seen[0] != digest:
                    return 422, {"error": "idempotency key reused with another request"}
                known = self.keys[seen[1]]
                return 200, {"id": known.id, "key": known.key}
            fmt = body["format"]
            key = keys.generate(keys.KeyFormat(length=int(fmt["length"]),
                                               encoding=fmt["encoding"],
                                               prefix=fmt["prefix"] or self.prefix))
            key_id = f"key_{next(self._ids):06d}"
            self.keys[key_id] = VendorKey(
                id=key_id, key=key, namespace=body["namespace"], name=body["name"],
                uid=body["uid"], version=body["version"], scopes=tuple(body["scopes"]),
                idempotency_key=idem)
            self._by_idempotency[idem] = (digest, key_id)
            if self._lose_mint_answers:
                self._lose_mint_answers -= 1
                return 502, {"error": "bad gateway", "id": key_id}
        return 201, {"id": key_id, "key": key}

    def _revoke(self, key_id: str) -> int:
        with self._lock:
            known = self.keys.get(key_id)
            if known is None:
                return 404
            known.revoked = True
            return 204


def _mint_problem(body: Any) -> str:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for name, kind in (("namespace", str), ("name", str), ("uid", str), ("version", int),
                       ("scopes", list), ("format", dict)):
        if not isinstance(body.get(name), kind):
            return f"{name} missing or of the wrong type"
    fmt = body["format"]
    if fmt.get("encoding") not in keys.ENCODINGS or not isinstance(fmt.get("length"), int) \
            or not isinstance(fmt.get("prefix"), str):
        return "format must have length, encoding and prefix"
    return ""


def _handler_for(vendor: FakeVendor) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: pytest output stays readable (calls are recorded instead)."""

        def do_POST(self) -> None:
            self._handle("POST")

        def do_DELETE(self) -> None:
            self._handle("DELETE")

        def do_GET(self) -> None:
            self._handle("GET")

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = "<not json>"
            idem = self.headers.get("Idempotency-Key")
            authorized = vendor._authorized(self.headers.get("Authorization"))
            present = frozenset(name.lower() for name in self.headers)

            def call(status: int, key_id: str | None = None) -> VendorCall:
                return VendorCall(method, self.path, body, present, idem, authorized, status,
                                  key_id)

            action, detail = vendor._plan(method)
            if action == "drop":
                vendor._wait(cast(float, detail))
                vendor._record(call(0))
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if action in ("fail", "refuse"):
                if action == "fail":
                    failure, delay = cast(tuple[_Failure, float], detail)
                    status, retry_after = failure.status, failure.retry_after
                else:
                    status, delay = cast(tuple[int, float], detail)
                    retry_after = None
                vendor._wait(delay)
                vendor._record(call(status))
                self._answer(status, {"error": "injected"}, retry_after)
                return
            vendor._wait(cast(float, detail))
            if not authorized:
                vendor._record(call(401))
                self._answer(401, {"error": "unauthorized"})
                return
            if method == "POST" and self.path == "/keys":
                if not idem:
                    vendor._record(call(400))
                    self._answer(400, {"error": "Idempotency-Key is required"})
                    return
                status, answer = vendor._mint(body, idem)
                vendor._record(call(status, answer.get("id")))
                self._answer(status, answer if status in (200, 201) else
                             {"error": answer.get("error", "")})
                return
            if method == "DELETE" and self.path.startswith("/keys/") and self.path.count("/") == 2:
                key_id = self.path.removeprefix("/keys/")
                status = vendor._revoke(key_id)
                vendor._record(call(status, key_id))
                self._answer(status, None)
                return
            vendor._record(call(404))
            self._answer(404, {"error": "no such route"})

        def _answer(self, status: int, payload: Any, retry_after: str | None = None) -> None:
            data = b"" if payload is None or status == 204 else json.dumps(payload).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _write_tls_files(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A throwaway CA and a server certificate for 127.0.0.1: (cert, key, ca) PEM paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-vendor-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path, ca_path = (folder / "server.pem", folder / "server-key.pem",
                                    folder / "ca.pem")
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, ca_path


def iter_json_lines(calls: list[VendorCall]) -> Iterator[str]:
    """The recorded calls as JSON lines, for a test's failure message."""
    for call in calls:
        yield json.dumps({"method": call.method, "path": call.path, "status": call.status,
                          "idempotency_key": call.idempotency_key, "key_id": call.key_id})
