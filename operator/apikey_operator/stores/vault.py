"""HashiCorp Vault / OpenBao KV v2 store (hvac).

Layout, read as-is by `apikey_operator.client.VaultSource`:

* entry ``<mount>/<pathPrefix>/<namespace>/<name>``;
* each KV version's data is ``{"key": <key>, "document": <VersionDocument JSON>}``
  and the document's ``version`` is that KV version number;
* the KV metadata's ``custom_metadata`` holds the bookkeeping: ``managed-by``,
  ``owner-uid``, ``apikey-namespace``, ``apikey-name``, the pointers ``current``,
  ``previous``, ``pending`` (KV version numbers), ``previous-valid-until``
  (RFC 3339, UTC), ``scopes`` (comma-separated, informational) and one
  ``handled-<kind>`` entry per answered trigger token.

Revoked versions are destroyed (their data is gone from Vault), and the entry's
metadata is replaced in a single write per step, so every pointer change is atomic.
A pending version is written with check-and-set on the entry's latest version, so
two writers can never both add one; a write that landed but whose pointer update
was lost (a crash, a timeout) is adopted by the next `write_pending`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import hvac.adapters
import hvac.exceptions
import requests

from apikey_operator import redaction
from apikey_operator.stores import register
from apikey_operator.stores.base import (
    MANAGED_BY,
    Capabilities,
    KeyRef,
    StoreConfigError,
    StoreError,
    StoreState,
    StoreUnavailable,
    VersionDocument,
    answered,
    check_owner,
    format_time,
    parse_time,
)
from apikey_operator.stores.blocking import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT_SECONDS,
    BlockingRunner,
    BlockingStore,
    Deadline,
)
from apikey_operator.stores.settings import (
    ConfigReader,
    check_ref_names,
)

HANDLED_PREFIX = "handled-"
# Vault limits custom metadata to 64 keys of 128 bytes and values of 512 bytes.
MAX_METADATA_VALUE = 512
MAX_METADATA_KEY = 128
DEFAULT_JWT_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# Renew a login token once less than this fraction of its lease is left.
RENEW_FRACTION = 1 / 3
# A renewal that grants less than this (the token hit its max TTL) means: log in again.
MIN_USEFUL_LEASE = 10.0

# Segments start with a letter, digit or underscore: no '', '.' or '..' segment can pass.
_PATH = re.compile(r"^[A-Za-z0-9_][-A-Za-z0-9_.]*(/[A-Za-z0-9_][-A-Za-z0-9_.]*)*$")
# A path is allowed: Vault is sometimes served below a reverse proxy's prefix.
_ADDRESS = re.compile(r"^https?://[^/\s]+(/\S*)?$")
_AUTH_METHODS = ("token", "kubernetes", "approle")


@dataclass(frozen=True)
class AuthConfig:
    method: str
    token_file: str = ""
    role: str = ""
    jwt_file: str = DEFAULT_JWT_FILE
    role_id: str = ""
    secret_id_file: str = ""
    mount_path: str = ""


@dataclass(frozen=True)
class VaultConfig:
    """A validated `type: vault` config block."""

    address: str
    auth: AuthConfig
    mount: str = "secret"
    path_prefix: str = "apikeys"
    ca_file: str | None = None
    skip_verify: bool = False
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    vault_namespace: str | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY


def parse_config(store_name: str, raw: Mapping[str, Any]) -> VaultConfig:
    """Validate a config block; raises StoreConfigError naming every bad field."""
    reader = ConfigReader(store_name, raw)
    address = reader.string("address", hint="expected http(s)://host[:port][/path]",
                            pattern=_ADDRESS)
    mount = reader.string("mount", "secret", pattern=_PATH, hint="expected a/b segments")
    prefix = reader.string("pathPrefix", "apikeys", pattern=_PATH, hint="expected a/b segments")
    timeout = reader.number("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS, minimum=0.1, maximum=300)
    concurrency = reader.integer("maxConcurrency", DEFAULT_MAX_CONCURRENCY, minimum=1, maximum=64)
    vault_namespace = reader.optional_string("namespace")
    tls = reader.section("tls")
    ca_file = tls.readable_file("caFile") if tls.raw.get("caFile") is not None else None
    skip_verify = tls.boolean("skipVerify", False)
    tls.no_unknown_fields()
    if raw.get("auth") is None:
        reader.problem("auth", f"is required (method: {', '.join(_AUTH_METHODS)})")
    auth = _parse_auth(reader.section("auth"))
    reader.no_unknown_fields()
    reader.done()
    return VaultConfig(
        address=address.rstrip("/"),
        auth=auth,
        mount=mount,
        path_prefix=prefix,
        ca_file=ca_file,
        skip_verify=skip_verify,
        timeout=timeout,
        vault_namespace=vault_namespace,
        max_concurrency=concurrency,
    )


def _parse_auth(reader: ConfigReader) -> AuthConfig:
    if not reader.raw:
        return AuthConfig(method="")
    method = reader.string("method")
    if method and method not in _AUTH_METHODS:
        known = ", ".join(_AUTH_METHODS)
        reader.problem("method", f"unknown auth method {method!r} (known: {known})")
        return AuthConfig(method=method)
    if method == "token":
        auth = AuthConfig(method, token_file=reader.readable_file("tokenFile"))
    elif method == "kubernetes":
        auth = AuthConfig(
            method,
            role=reader.string("role"),
            jwt_file=reader.readable_file("jwtFile", DEFAULT_JWT_FILE),
            mount_path=reader.string("mountPath", "kubernetes", pattern=_PATH),
        )
    elif method == "approle":
        auth = AuthConfig(
            method,
            role_id=reader.string("roleId"),
            secret_id_file=reader.readable_file("secretIdFile"),
            mount_path=reader.string("mountPath", "approle", pattern=_PATH),
        )
    else:
        return AuthConfig(method=method)
    reader.no_unknown_fields()
    return auth


class _TokenFileAuth:
    """A token kept in a file (e.g. by Vault Agent); re-read whenever the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._token = ""

    def token(self, adapter: hvac.adapters.JSONAdapter, deadline: Deadline) -> str:
        with self._lock:
            try:
                st = os.stat(self.path)
                signature = (st.st_mtime_ns, st.st_size, st.st_ino)
                if signature != self._signature:
                    with open(self.path, encoding="utf-8") as handle:
                        token = handle.read().strip()
                    if not token:
                        raise StoreError(f"Vault token file {self.path} is empty")
                    self._token, self._signature = token, signature
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                raise StoreError(f"cannot read Vault token file {self.path}: {reason}") from None
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._signature = None


class _LoginAuth:
    """A token obtained by logging in (kubernetes or approle), renewed before its lease ends."""

    def __init__(
        self,
        description: str,
        mount_path: str,
        credentials: Callable[[], dict[str, str]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description = description
        self.mount_path = mount_path
        self._credentials = credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._lease = 0.0
        self._renewable = False
        self._obtained = 0.0

    def token(self, adapter: hvac.adapters.JSONAdapter, deadline: Deadline) -> str:
        with self._lock:
            if not self._token:
                self._login(adapter, deadline)
            elif self._lease > 0:
                left = self._lease - (self._clock() - self._obtained)
                if left < self._lease * RENEW_FRACTION:
                    self._renew_or_login(adapter, deadline)
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = ""

    def _login(self, adapter: hvac.adapters.JSONAdapter, deadline: Deadline) -> None:
        try:
            response = adapter.post(
                f"/v1/auth/{self.mount_path}/login",
                json=self._credentials(),
                timeout=deadline.remaining(),
            )
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest,
                hvac.exceptions.Unauthorized) as exc:
            raise StoreError(
                f"Vault {self.description} login was refused ({_vault_reason(exc)})"
            ) from None
        self._accept(response)

    def _renew_or_login(self, adapter: hvac.adapters.JSONAdapter, deadline: Deadline) -> None:
        if self._renewable:
            try:
                response = adapter.post(
                    "/v1/auth/token/renew-self",
                    headers={"X-Vault-Token": self._token},
                    timeout=deadline.remaining(),
                )
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
                response = None
            if response is not None:
                lease = float(_auth_block(response).get("lease_duration") or 0)
                if lease >= MIN_USEFUL_LEASE:
                    self._accept(response)
                    return
        self._login(adapter, deadline)

    def _accept(self, response: Any) -> None:
        auth = _auth_block(response)
        token = auth.get("client_token")
        if not isinstance(token, str) or not token:
            raise StoreError(f"Vault {self.description} login returned no token")
        self._token = token
        self._lease = float(auth.get("lease_duration") or 0)
        self._renewable = bool(auth.get("renewable"))
        self._obtained = self._clock()


def _auth_block(response: Any) -> dict[str, Any]:
    auth = response.get("auth") if isinstance(response, dict) else None
    return auth if isinstance(auth, dict) else {}


def _read_file(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read().strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StoreError(f"cannot read {what} {path}: {reason}") from None
    if not value:
        raise StoreError(f"{what} {path} is empty")
    return value


def _make_auth(config: AuthConfig) -> _TokenFileAuth | _LoginAuth:
    if config.method == "token":
        return _TokenFileAuth(config.token_file)
    if config.method == "kubernetes":
        role, jwt_file = config.role, config.jwt_file
        return _LoginAuth(
            f"kubernetes (role {role!r})",
            config.mount_path,
            lambda: {"role": role, "jwt": _read_file(jwt_file, "service account token")},
        )
    role_id, secret_id_file = config.role_id, config.secret_id_file
    return _LoginAuth(
        "approle",
        config.mount_path,
        lambda: {"role_id": role_id, "secret_id": _read_file(secret_id_file, "AppRole secret id")},
    )


def _vault_reason(exc: hvac.exceptions.VaultError) -> str:
    """Vault's own error strings: short, and never the request or response body."""
    errors = exc.errors if isinstance(exc.errors, list) else []
    text = "; ".join(str(e) for e in errors if isinstance(e, str))[:200]
    return text or type(exc).__name__


def _classify(store_name: str) -> Callable[[BaseException, str], StoreError | None]:
    def classify(exc: BaseException, operation: str) -> StoreError | None:
        where = f"store {store_name!r}: {operation}"
        if isinstance(exc, hvac.exceptions.VaultDown):
            return StoreUnavailable(f"{where}: Vault is sealed or unavailable (503)")
        if isinstance(exc, hvac.exceptions.RateLimitExceeded):
            return StoreUnavailable(f"{where}: throttled by Vault (429)", retry_after=5.0)
        if isinstance(exc, hvac.exceptions.InternalServerError | hvac.exceptions.BadGateway):
            return StoreUnavailable(f"{where}: Vault answered {type(exc).__name__}")
        if isinstance(exc, hvac.exceptions.UnexpectedError):
            return StoreUnavailable(f"{where}: Vault answered an unexpected status")
        if isinstance(exc, hvac.exceptions.Forbidden | hvac.exceptions.Unauthorized):
            return StoreError(
                f"{where}: permission denied by Vault ({_vault_reason(exc)}); check the "
                "operator's Vault policy and auth configuration"
            )
        if isinstance(exc, hvac.exceptions.VaultError):
            return StoreError(f"{where}: Vault refused the request ({_vault_reason(exc)})")
        if isinstance(exc, requests.exceptions.SSLError):
            return StoreError(
                f"{where}: TLS verification of Vault failed; check tls.caFile (or the address)"
            )
        if isinstance(exc, requests.Timeout):
            return StoreUnavailable(f"{where}: Vault timed out")
        if isinstance(exc, requests.ConnectionError):
            return StoreUnavailable(f"{where}: cannot connect to Vault")
        if isinstance(exc, requests.RequestException):
            return StoreUnavailable(f"{where}: request to Vault failed ({type(exc).__name__})")
        return None

    return classify


@dataclass(frozen=True)
class _Entry:
    """The KV metadata of one entry, as far as this store cares."""

    latest: int
    custom: dict[str, str]

    @property
    def managed(self) -> bool:
        return self.custom.get("managed-by") == MANAGED_BY

    @property
    def owner_uid(self) -> str:
        return self.custom.get("owner-uid", "") if self.managed else ""

    def pointer(self, name: str) -> int | None:
        try:
            number = int(self.custom.get(name, ""))
        except ValueError:
            return None
        return number if number > 0 else None


class VaultStore(BlockingStore):
    """Key versions in Vault / OpenBao KV v2 (see the module docstring for the layout)."""

    type_name: ClassVar[str] = "vault"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, name: str, config: VaultConfig) -> None:
        self.name = name
        self.config = config
        self._auth = _make_auth(config.auth)
        self._local = threading.local()
        self._runner = BlockingRunner(
            name, _classify(name), max_concurrency=config.max_concurrency, timeout=config.timeout
        )

    # -- Protocol -----------------------------------------------------------------------

    def location(self, ref: KeyRef) -> str:
        # The storeRef form `vault:<mount>/<path>`; a mount with slashes is named in the
        # query, so a consumer can still split the reference.
        ref_text = f"vault:{self.config.mount}/{self._path(ref)}"
        if "/" in self.config.mount.strip("/"):
            ref_text += f"?mount={self.config.mount}"
        return ref_text

    def _check_document(self, document: VersionDocument) -> None:
        _check_handles(document)

    async def close(self) -> None:
        self._runner.close()

    # -- steps (blocking, in a worker thread) ---------------------------------------------

    def _read(self, ref: KeyRef, deadline: Deadline) -> StoreState:
        path = self._path(ref)
        entry = self._entry(path, deadline)
        if entry is None:
            return StoreState()
        if entry.owner_uid != ref.uid or not ref.uid:
            # Not ours: report who owns it, never load its key versions.
            return StoreState(exists=True, owner_uid=entry.owner_uid)
        current = self._version_or_none(path, entry.pointer("current"), deadline)
        previous = self._version_or_none(path, entry.pointer("previous"), deadline)
        pending = self._version_or_none(path, entry.pointer("pending"), deadline)
        valid_until = None
        if previous is not None and entry.custom.get("previous-valid-until"):
            try:
                valid_until = parse_time(entry.custom["previous-valid-until"])
            except ValueError:
                where = self.location(ref)
                raise StoreError(f"{where} has a malformed previous-valid-until") from None
        handled = _handled(entry.custom)
        return StoreState(
            exists=True,
            owner_uid=entry.owner_uid,
            current=current,
            previous=previous,
            previous_valid_until=valid_until,
            pending=pending,
            handled=handled,
        )

    def _write_pending(
        self, ref: KeyRef, document: VersionDocument, deadline: Deadline
    ) -> VersionDocument:
        path = self._path(ref)
        entry = self._owned_entry(ref, path, deadline)
        if entry is None:
            custom = {
                "managed-by": MANAGED_BY,
                "owner-uid": ref.uid,
                "apikey-namespace": ref.namespace,
                "apikey-name": ref.name,
                "scopes": _scopes_value(document.scopes),
            }
            self._put_metadata(path, custom, deadline)
            entry = _Entry(latest=0, custom=custom)
        existing = self._version_or_none(path, entry.pointer("pending"), deadline)
        if existing is not None:
            return existing
        pointed = {entry.pointer(p) for p in ("current", "previous", "pending")}
        if entry.latest > 0 and entry.latest not in pointed:
            # The latest version is nobody's: a write whose pointer update was lost.
            orphan = self._adoptable(path, entry.latest, deadline)
            if orphan is not None:
                self._put_metadata(path, {**entry.custom, "pending": str(orphan.version)}, deadline)
                return orphan
        # KV numbers versions itself; check-and-set pins the number this write gets.
        # Round-trip through JSON so the caller gets exactly what a later read returns.
        stored = VersionDocument.from_json(
            dataclasses.replace(document, version=entry.latest + 1).to_json()
        )
        body = {
            "data": {"key": stored.key, "document": stored.to_json()},
            "options": {"cas": entry.latest},
        }
        try:
            response = self._request(
                deadline,
                lambda a: a.post(f"/v1/{self.config.mount}/data/{path}", json=body,
                                 timeout=deadline.remaining()),
            )
        except hvac.exceptions.InvalidRequest as exc:
            if "check-and-set" in _vault_reason(exc):
                raise StoreUnavailable(
                    f"{self.location(ref)} was written concurrently; retrying will pick it up"
                ) from None
            raise
        written = _data(response).get("version")
        if written != stored.version:
            raise StoreError(
                f"{self.location(ref)}: Vault stored version {written}, expected {stored.version}"
            )
        self._put_metadata(path, {**entry.custom, "pending": str(stored.version)}, deadline)
        return stored

    def _promote(
        self, ref: KeyRef, version: int, valid_until: datetime, deadline: Deadline
    ) -> None:
        path = self._path(ref)
        entry = self._owned_entry(ref, path, deadline)
        if entry is None:
            raise StoreError(f"{self.location(ref)} does not exist; nothing to promote")
        current = entry.pointer("current")
        if current == version:
            return
        if entry.pointer("pending") != version:
            raise StoreError(f"{self.location(ref)}: version {version} is not the pending version")
        if self._version_or_none(path, entry.pointer("previous"), deadline) is not None:
            raise StoreError(
                f"{self.location(ref)}: the previous version must be revoked before promoting"
            )
        pending = self._version_or_none(path, version, deadline)
        if pending is None:
            raise StoreError(f"{self.location(ref)}: pending version {version} is gone")
        custom = {k: v for k, v in entry.custom.items()
                  if k not in ("pending", "previous", "previous-valid-until")}
        custom["current"] = str(version)
        custom["scopes"] = _scopes_value(pending.scopes)
        if current is not None:
            custom["previous"] = str(current)
            custom["previous-valid-until"] = format_time(valid_until)
        for kind, token in answered(StoreState(handled=_handled(entry.custom)), pending).items():
            custom[HANDLED_PREFIX + kind] = token
        self._put_metadata(path, custom, deadline)

    def _revoke(self, ref: KeyRef, version: int, deadline: Deadline) -> None:
        path = self._path(ref)
        entry = self._owned_entry(ref, path, deadline)
        if entry is None:
            return
        # Destroy first: a crash before the pointer update leaves a pointer to a version that
        # reads as absent, never a live key that nothing points at.
        self._request(
            deadline,
            lambda a: a.post(f"/v1/{self.config.mount}/destroy/{path}",
                             json={"versions": [version]}, timeout=deadline.remaining()),
        )
        custom = dict(entry.custom)
        for pointer in ("current", "previous", "pending"):
            if entry.pointer(pointer) == version:
                del custom[pointer]
                if pointer == "previous":
                    custom.pop("previous-valid-until", None)
        if custom != entry.custom:
            self._put_metadata(path, custom, deadline)

    def _delete(self, ref: KeyRef, deadline: Deadline) -> None:
        path = self._path(ref)
        if self._owned_entry(ref, path, deadline) is None:
            return
        self._request(
            deadline,
            lambda a: a.delete(f"/v1/{self.config.mount}/metadata/{path}",
                               timeout=deadline.remaining()),
        )

    # -- helpers ------------------------------------------------------------------------

    def _path(self, ref: KeyRef) -> str:
        """The entry's path under the mount; it has exactly the prefix's segments plus two."""
        check_ref_names(ref)
        path = f"{self.config.path_prefix}/{ref.namespace}/{ref.name}"
        expected = [*self.config.path_prefix.split("/"), ref.namespace, ref.name]
        if path.split("/") != expected or any(s in ("", ".", "..") for s in expected):
            raise StoreError(f"refusing the derived path {path!r}")
        return path

    def _adapter(self, deadline: Deadline) -> hvac.adapters.JSONAdapter:
        """This thread's HTTP adapter (requests sessions are not shared across threads),
        carrying a valid token."""
        adapter: hvac.adapters.JSONAdapter | None = getattr(self._local, "adapter", None)
        if adapter is None:
            verify: bool | str = not self.config.skip_verify
            if self.config.ca_file and not self.config.skip_verify:
                verify = self.config.ca_file
            adapter = hvac.adapters.JSONAdapter(
                base_uri=self.config.address,
                verify=verify,
                timeout=self.config.timeout,
                namespace=self.config.vault_namespace,
            )
            self._local.adapter = adapter
        adapter.token = self._auth.token(adapter, deadline)
        return adapter

    def _request(self, deadline: Deadline, call: Callable[[hvac.adapters.JSONAdapter], Any]) -> Any:
        """One request; on 403 the credentials are refreshed (token file re-read, or a new
        login) and the request is tried once more."""
        try:
            return call(self._adapter(deadline))
        except hvac.exceptions.Forbidden:
            self._auth.invalidate()
            return call(self._adapter(deadline))

    def _entry(self, path: str, deadline: Deadline) -> _Entry | None:
        try:
            response = self._request(
                deadline,
                lambda a: a.get(f"/v1/{self.config.mount}/metadata/{path}",
                                timeout=deadline.remaining()),
            )
        except hvac.exceptions.InvalidPath:
            return None
        data = _data(response)
        custom = data.get("custom_metadata") or {}
        return _Entry(
            latest=int(data.get("current_version") or 0),
            custom={str(k): str(v) for k, v in custom.items()},
        )

    def _owned_entry(self, ref: KeyRef, path: str, deadline: Deadline) -> _Entry | None:
        """The entry if it is absent (None) or ours; StoreConflict otherwise."""
        entry = self._entry(path, deadline)
        if entry is not None:
            state = StoreState(exists=True, owner_uid=entry.owner_uid)
            check_owner(state, ref, self.location(ref))
        return entry

    def _version_or_none(
        self, path: str, version: int | None, deadline: Deadline
    ) -> VersionDocument | None:
        """The document stored as KV `version`, or None if there is none or it was destroyed."""
        if version is None:
            return None
        try:
            response = self._request(
                deadline,
                lambda a: a.get(f"/v1/{self.config.mount}/data/{path}",
                                params={"version": version}, timeout=deadline.remaining()),
            )
        except hvac.exceptions.InvalidPath:
            return None
        data = _data(response).get("data") or {}
        return _parse_version(data, version)

    def _adoptable(self, path: str, version: int, deadline: Deadline) -> VersionDocument | None:
        try:
            return self._version_or_none(path, version, deadline)
        except StoreError:
            return None

    def _put_metadata(self, path: str, custom: Mapping[str, str], deadline: Deadline) -> None:
        # Vault replaces custom_metadata as a whole: every write carries the full map.
        # It refuses empty values, so an empty field (no scopes) is simply left out.
        body = {"custom_metadata": {k: v for k, v in custom.items() if v}}
        self._request(
            deadline,
            lambda a: a.post(f"/v1/{self.config.mount}/metadata/{path}", json=body,
                             timeout=deadline.remaining()),
        )


def _data(response: Any) -> dict[str, Any]:
    data = response.get("data") if isinstance(response, dict) else None
    return data if isinstance(data, dict) else {}


def _parse_version(data: Mapping[str, Any], version: int) -> VersionDocument:
    """The document of KV `version`, checked against the key stored beside it."""
    text = data.get("document")
    if not isinstance(text, str):
        raise StoreError(f"KV version {version} holds no document")
    document = VersionDocument.from_json(text)
    if document.version != version or document.key != data.get("key"):
        raise StoreError(f"KV version {version} holds an inconsistent document")
    redaction.register(document.key)
    return document


def _handled(custom: Mapping[str, str]) -> dict[str, str]:
    # `trigger` was once kept among the handles (and so written here); it answers nothing.
    return {key[len(HANDLED_PREFIX):]: value for key, value in custom.items()
            if key.startswith(HANDLED_PREFIX) and key != HANDLED_PREFIX + "trigger"}


def _check_handles(document: VersionDocument) -> None:
    for kind, token in document.handles.items():
        if len((HANDLED_PREFIX + kind).encode()) > MAX_METADATA_KEY:
            raise StoreError(f"trigger kind {kind[:32]!r}... is too long for Vault metadata")
        if len(token.encode()) > MAX_METADATA_VALUE:
            raise StoreError(
                f"the {kind} token is longer than {MAX_METADATA_VALUE} bytes; hash it first"
            )


def _scopes_value(scopes: tuple[str, ...]) -> str:
    """Scopes for the metadata (informational; the full list is in each document), cut at a
    scope boundary to fit Vault's value limit."""
    kept: list[str] = []
    for index, scope in enumerate(scopes):
        rest = len(scopes) - index
        candidate = ",".join([*kept, scope])
        tail = f",+{rest - 1} more" if rest > 1 else ""
        if len(candidate) + len(tail) > MAX_METADATA_VALUE:
            return ",".join([*kept, f"+{rest} more"])
        kept.append(scope)
    return ",".join(kept)


@register("vault")
def create_vault_store(name: str, config: Mapping[str, Any], operator_namespace: str,
                       kube: object = None) -> VaultStore:
    """Validate a `type: vault` block and build its store (no network access yet)."""
    try:
        return VaultStore(name, parse_config(name, config))
    except StoreConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise StoreConfigError(f"store {name!r} is misconfigured: {exc}") from None

