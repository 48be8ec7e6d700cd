"""An HTTP proxy in front of a store server that answers with injected errors on demand.

`TcpProxy` (servers.py) simulates a server that is gone or hangs; this proxy
simulates one that answers badly: 500s, 503s, 429 with Retry-After, AWS
throttling errors. Every request is counted, so a test can tell backoff from a
hot loop. Chain them (store -> TcpProxy -> FaultHttpProxy -> server) to have both.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from apikey_operator.testing.servers import free_port

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
               "proxy-authorization", "proxy-authenticate", "content-length", "host"}


@dataclass(frozen=True)
class HttpFault:
    """The canned answer given to every request while the fault is on."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


# Faults as each backend's own servers would phrase them.
VAULT_500 = HttpFault(500, b'{"errors":["internal error"]}', {"Content-Type": "application/json"})
VAULT_429 = HttpFault(429, b'{"errors":["rate limit quota exceeded"]}',
                      {"Content-Type": "application/json", "Retry-After": "2"})
AWS_500 = HttpFault(500, b'{"__type":"InternalServiceError","message":"internal error"}',
                    {"Content-Type": "application/x-amz-json-1.1"})
AWS_THROTTLE = HttpFault(400, b'{"__type":"ThrottlingException","message":"Rate exceeded"}',
                         {"Content-Type": "application/x-amz-json-1.1"})


class FaultHttpProxy:
    """Forwards HTTP/1.1 to 127.0.0.1:`target_port`, or answers with `fault` when one is set."""

    def __init__(self, target_port: int, *, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.fault: HttpFault | None = None
        self.requests = 0
        self.injected = 0
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port),
                                                       self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fault-http-proxy")

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @contextlib.contextmanager
    def failing(self, fault: HttpFault) -> Iterator[None]:
        """Answer every request with `fault` for the duration of the block."""
        self.fault = fault
        try:
            yield
        finally:
            self.fault = None

    def counts(self) -> tuple[int, int]:
        """(requests seen, requests answered with a fault) so far."""
        with self._lock:
            return self.requests, self.injected

    def _count(self, injected: bool) -> None:
        with self._lock:
            self.requests += 1
            self.injected += int(injected)

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy.fault
                proxy._count(fault is not None)
                if fault is not None:
                    self._answer(fault.status, dict(fault.headers), fault.body)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.target_port,
                                                      timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in _HOP_BY_HOP}
                    headers["Host"] = f"127.0.0.1:{proxy.target_port}"
                    upstream.request(self.command, self.path, body=body or None,
                                     headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self._answer(response.status, {k: v for k, v in response.getheaders()
                                                   if k.lower() not in _HOP_BY_HOP}, data)
                except OSError:
                    self._answer(502, {}, b"")
                finally:
                    upstream.close()

            def _answer(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

            def log_message(self, format: str, *args: object) -> None:
                return

        return Handler
