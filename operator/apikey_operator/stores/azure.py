"""Azure Key Vault store (azure-keyvault-secrets, azure-identity).

Layout, read as-is by `apikey_operator.client.AzureKeyVaultSource`:

* one secret per ApiKey, named by `secret_name` (below) under ``namePrefix``;
* each key version is a secret version whose value is
  ``{"key": <key>, "document": <VersionDocument JSON>}`` and whose tags are
  ``managed-by=apikey-operator``, ``owner-uid``, ``namespace``, ``name``,
  ``version`` (the document's number) and ``stage``: ``pending``, ``current``,
  ``previous`` or ``revoked``; the previous version also carries ``valid-until``
  and the current one the handled trigger tokens (``handled-<kind>``, tokens
  outside printable ASCII stored as ``b64:<base64url>``);
* promotion moves the stage tags (the old current becomes previous first, then
  the pending version becomes current: a crash between the two leaves a pending
  version and a previous one with no current, which reads as "not promoted yet";
  the retried promotion finishes it);
* Key Vault cannot delete one version: revoking disables it (and tags it
  ``revoked``), after which Key Vault refuses every read of its value; the
  current version cannot be revoked (promote another one first);
* deleting (deletionPolicy Delete) deletes the secret, which Key Vault keeps
  soft-deleted for its retention period, and purges it when ``purgeOnDelete``.

Names: Key Vault allows ``[0-9a-zA-Z-]``, 1..127 characters, compared without
regard to case. `secret_name` maps ``<namespace>/<name>`` (a DNS label and a DNS
subdomain: ``[a-z0-9-]`` and ``[a-z0-9.-]``) injectively onto that alphabet with
``-`` as the escape character: ``-`` is written ``--``, ``.`` is written ``-d``
and the ``/`` between namespace and name is written ``-s``, so ``a-b/c`` is
``a--b-sc`` and ``a/b-c`` is ``a-sb--c``. That encoding can be decoded, hence two
ApiKeys never share it. When prefix + encoding exceed 127 characters the name is
``<prefix>-h<26 base32 digits of SHA-256 of the encoding>-<as much of the encoding
as fits>``: it starts with ``-`` right after the prefix, which no plain encoding
does (a namespace starts with a letter or digit), so a long name never meets a
short one, and two long names meet only if SHA-256 collides.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import re
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import azure.core.exceptions as azure_errors
from azure.core.credentials import TokenCredential
from azure.keyvault.secrets import SecretClient

from apikey_operator import redaction
from apikey_operator.stores import register
from apikey_operator.stores.base import (
    MANAGED_BY,
    Capabilities,
    KeyRef,
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
from apikey_operator.stores.sdklogs import (
    silence_sdk_body_logging,
)
from apikey_operator.stores.settings import (
    ConfigReader,
    check_ref_names,
)

# azure-core's HTTP logging policy prints bodies at DEBUG when asked: never let it, and
# keep its INFO line per request (URL and headers) out of the operator's log as well.
_HTTP_LOGGER = "azure.core.pipeline.policies.http_logging_policy"
silence_sdk_body_logging((_HTTP_LOGGER,))
logging.getLogger(_HTTP_LOGGER).setLevel(logging.WARNING)

TAG_MANAGED_BY = "managed-by"
TAG_OWNER_UID = "owner-uid"
TAG_NAMESPACE = "namespace"
TAG_NAME = "name"
TAG_VERSION = "version"
TAG_STAGE = "stage"
TAG_VALID_UNTIL = "valid-until"
TAG_HANDLED_PREFIX = "handled-"
PENDING, CURRENT, PREVIOUS, REVOKED = "pending", "current", "previous", "revoked"
CONTENT_TYPE = "application/vnd.apikeys.dev.version+json"
MAX_NAME = 127
MAX_TAG_VALUE = 256
# Key Vault allows 15 tags per version; seven are ours, the rest are for handled kinds.
MAX_HANDLED_KINDS = 8
_HASH_DIGITS = 26

_NAME_PREFIX = re.compile(r"^[0-9a-zA-Z-]{0,40}$")
_VAULT_URL = re.compile(r"^https://[^/\s?#]+/?$")
_KIND = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_TAG_SAFE = re.compile(r"^[\x20-\x7e]*$")
_ENCODED = "b64:"
_ERROR_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9.]{0,63}$")
_GUID = re.compile(r"^[0-9a-fA-F-]{1,64}$")


@dataclass(frozen=True)
class AzureAuth:
    method: str  # "default" | "client-secret"
    tenant_id: str = ""
    client_id: str = ""
    client_secret_file: str = ""
    authority_host: str | None = None


@dataclass(frozen=True)
class AzureConfig:
    """A validated `type: azure-key-vault` config block."""

    vault_url: str
    auth: AzureAuth
    name_prefix: str = "apikeys-"
    purge_on_delete: bool = False
    ca_file: str | None = None
    verify_challenge_resource: bool = True
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.vault_url).netloc


def parse_config(store_name: str, raw: Mapping[str, Any]) -> AzureConfig:
    """Validate a config block; raises StoreConfigError naming every bad field."""
    reader = ConfigReader(store_name, raw)
    vault_url = reader.string(
        "vaultUrl", pattern=_VAULT_URL, hint="expected https://<vault>.vault.azure.net"
    )
    prefix = reader.string(
        "namePrefix", "apikeys-", pattern=_NAME_PREFIX,
        hint="at most 40 of 0-9, a-z, A-Z and -",
    )
    auth_reader = reader.section("auth")
    method = auth_reader.string("method", "default")
    auth = AzureAuth(method="default")
    if method == "client-secret":
        tenant = auth_reader.string("tenantId", pattern=_GUID, hint="the directory (tenant) id")
        client = auth_reader.string("clientId", pattern=_GUID, hint="the application id")
        secret_file = auth_reader.readable_file("clientSecretFile")
        authority = auth_reader.optional_string("authorityHost")
        auth = AzureAuth(method, tenant, client, secret_file, authority)
    elif method != "default":
        auth_reader.problem("method", f"{method!r} is not one of default, client-secret")
    auth_reader.no_unknown_fields()
    purge = reader.boolean("purgeOnDelete", False)
    ca_file = reader.optional_string("caFile")
    if ca_file is not None:
        try:
            ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            reader.problem("caFile", f"cannot load {ca_file}: {type(exc).__name__}")
    verify = reader.boolean("verifyChallengeResource", True)
    timeout = reader.number("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS, minimum=0.1, maximum=300)
    concurrency = reader.integer("maxConcurrency", DEFAULT_MAX_CONCURRENCY, minimum=1, maximum=64)
    reader.no_unknown_fields()
    reader.done()
    return AzureConfig(
        vault_url=vault_url.rstrip("/"),
        auth=auth,
        name_prefix=prefix,
        purge_on_delete=purge,
        ca_file=ca_file,
        verify_challenge_resource=verify,
        timeout=timeout,
        max_concurrency=concurrency,
    )


def encode_ref(namespace: str, name: str) -> str:
    """`<namespace>/<name>` in `[0-9a-z-]`, decodable (see the module docstring)."""

    def escape(text: str) -> str:
        return text.replace("-", "--").replace(".", "-d")

    return f"{escape(namespace)}-s{escape(name)}"


def secret_name(prefix: str, namespace: str, name: str) -> str:
    """The Key Vault secret name of the ApiKey `namespace/name` under `prefix`."""
    encoded = encode_ref(namespace, name)
    if len(prefix) + len(encoded) <= MAX_NAME:
        return prefix + encoded
    digest = base64.b32encode(hashlib.sha256(encoded.encode()).digest()).decode()
    head = f"{prefix}-h{digest[:_HASH_DIGITS].lower()}-"
    return head + encoded[: MAX_NAME - len(head)]


def encode_tag_value(token: str) -> str:
    """`token` as a tag value: verbatim when printable ASCII, else base64url."""
    if _TAG_SAFE.fullmatch(token) and not token.startswith(_ENCODED):
        return token
    return _ENCODED + base64.urlsafe_b64encode(token.encode()).decode()


def decode_tag_value(value: str) -> str:
    if not value.startswith(_ENCODED):
        return value
    try:
        return base64.urlsafe_b64decode(value[len(_ENCODED):].encode()).decode()
    except (binascii.Error, UnicodeDecodeError):
        return value


def _retry_after(response: Any) -> float | None:
    try:
        value = float(response.headers.get("Retry-After", ""))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if 0 <= value <= 3600 else None


def _classify(store_name: str) -> Callable[[BaseException, str], StoreError | None]:
    def classify(exc: BaseException, operation: str) -> StoreError | None:
        where = f"store {store_name!r}: {operation}"
        if isinstance(exc, azure_errors.ClientAuthenticationError):
            # Raised both for a 401 from the vault and by azure-identity's credentials.
            return StoreError(
                f"{where}: Azure did not authenticate the operator "
                f"({type(exc).__name__}); check its identity (workload identity, managed "
                "identity or client secret)"
            )
        if isinstance(exc, azure_errors.HttpResponseError):
            status = int(exc.status_code or 0)
            code = getattr(getattr(exc, "error", None), "code", None) or ""
            code = code if _ERROR_CODE.fullmatch(code) else ""
            detail = f"HTTP {status}" + (f" {code}" if code else "")
            if status == 429:
                return StoreUnavailable(
                    f"{where}: throttled by Key Vault ({detail})",
                    retry_after=_retry_after(exc.response) or 5.0,
                )
            if status >= 500 or status == 408:
                return StoreUnavailable(
                    f"{where}: Key Vault answered {detail}", retry_after=_retry_after(exc.response)
                )
            if status == 403:
                return StoreError(
                    f"{where}: Key Vault denied the request ({detail}); grant the operator's "
                    "identity secrets get, set, list and delete on the vault"
                )
            if status == 409:
                return StoreUnavailable(
                    f"{where}: a deleted secret of this name is waiting for its purge or "
                    f"recovery ({detail}); purge it, or set purgeOnDelete",
                    retry_after=30.0,
                )
            return StoreError(f"{where}: Key Vault refused the request ({detail})")
        if isinstance(exc, azure_errors.ServiceRequestError | azure_errors.ServiceResponseError):
            inner = getattr(exc, "inner_exception", None)
            if isinstance(inner, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in repr(inner):
                return StoreError(f"{where}: TLS verification of the Key Vault endpoint failed")
            if isinstance(exc, azure_errors.ServiceRequestTimeoutError
                          | azure_errors.ServiceResponseTimeoutError):
                return StoreUnavailable(f"{where}: Key Vault timed out")
            return StoreUnavailable(f"{where}: cannot reach Key Vault")
        if isinstance(exc, azure_errors.AzureError):
            return StoreError(f"{where}: Azure SDK error ({type(exc).__name__})")
        if isinstance(exc, ValueError) and "challenge" in str(exc).lower():
            return StoreError(
                f"{where}: the vault's authentication challenge names another resource; "
                "check vaultUrl (or verifyChallengeResource for an emulator)"
            )
        return None

    return classify


@dataclass(frozen=True)
class _Version:
    """What a version listing says about one secret version."""

    vid: str
    enabled: bool
    tags: dict[str, str]

    @property
    def ours(self) -> bool:
        return self.tags.get(TAG_MANAGED_BY) == MANAGED_BY

    @property
    def stage(self) -> str:
        return self.tags.get(TAG_STAGE, "")

    @property
    def number(self) -> int | None:
        try:
            return int(self.tags.get(TAG_VERSION, ""))
        except ValueError:
            return None


@dataclass(frozen=True)
class _Pointers:
    """The versions holding each stage, as the rotation steps see them."""

    current: _Version | None
    previous: _Version | None
    pending: _Version | None
    # A promotion stopped after the old current became previous (no current yet).
    unfinished: bool = False


def _owner_uid(versions: list[_Version]) -> str:
    """The uid every version names, or "" if any version is not the operator's."""
    if not all(v.ours for v in versions):
        return ""
    uids = {v.tags.get(TAG_OWNER_UID, "") for v in versions}
    return uids.pop() if len(uids) == 1 else ""


def _pointers(versions: list[_Version]) -> _Pointers:
    def staged(stage: str) -> _Version | None:
        found = [v for v in versions if v.enabled and v.stage == stage and v.number is not None]
        return max(found, key=lambda v: v.number or 0, default=None)

    current, previous, pending = staged(CURRENT), staged(PREVIOUS), staged(PENDING)
    # A pending version numbered like a promoted one is the twin of a write that landed
    # twice (a retried request whose first answer was lost): its promotion already happened.
    promoted = max((v.number or 0 for v in (current, previous) if v is not None), default=0)
    if pending is not None and (pending.number or 0) <= promoted:
        pending = None
    if current is None and previous is not None and pending is not None:
        return _Pointers(current=None, previous=previous, pending=pending, unfinished=True)
    return _Pointers(current=current, previous=previous, pending=pending)


def _handled(tags: Mapping[str, str]) -> dict[str, str]:
    # `trigger` was once kept among the handles; it answers nothing.
    return {k[len(TAG_HANDLED_PREFIX):]: decode_tag_value(v) for k, v in tags.items()
            if k.startswith(TAG_HANDLED_PREFIX) and k != TAG_HANDLED_PREFIX + "trigger"}


class AzureKeyVaultStore(BlockingStore):
    """Key versions in Azure Key Vault (see the module docstring for the layout)."""

    type_name: ClassVar[str] = "azure-key-vault"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, name: str, config: AzureConfig) -> None:
        self.name = name
        self.config = config
        self._client_lock = threading.Lock()
        self._client: SecretClient | None = None
        self._credential: Any = None
        self._runner = BlockingRunner(
            name, _classify(name), max_concurrency=config.max_concurrency, timeout=config.timeout
        )

    # -- Protocol -----------------------------------------------------------------------

    def location(self, ref: KeyRef) -> str:
        return f"azure:{self.config.host}/{self.secret_name(ref)}"

    def secret_name(self, ref: KeyRef) -> str:
        check_ref_names(ref)
        return secret_name(self.config.name_prefix, ref.namespace, ref.name)

    def _check_document(self, document: VersionDocument) -> None:
        if len(document.handles) > MAX_HANDLED_KINDS:
            raise StoreError(f"at most {MAX_HANDLED_KINDS} trigger kinds fit Key Vault's tags")
        for kind, token in document.handles.items():
            if not _KIND.fullmatch(kind):
                raise StoreError(f"trigger kind {kind[:32]!r} cannot be a tag name")
            if len(encode_tag_value(token)) > MAX_TAG_VALUE:
                raise StoreError(
                    f"the {kind} token does not fit a {MAX_TAG_VALUE}-character tag; hash it first"
                )

    async def close(self) -> None:
        self._runner.close()
        with self._client_lock:
            client, self._client = self._client, None
            credential, self._credential = self._credential, None
        if client is not None:
            client.close()
        if credential is not None and hasattr(credential, "close"):
            credential.close()

    # -- steps (blocking, in a worker thread) ---------------------------------------------

    def _read(self, ref: KeyRef, deadline: Deadline) -> StoreState:
        name = self.secret_name(ref)
        versions = self._versions(name, deadline)
        if versions is None:
            return StoreState()
        owner = _owner_uid(versions)
        if owner != ref.uid or not ref.uid:
            return StoreState(exists=True, owner_uid=owner)
        pointers = _pointers(versions)
        current_v = pointers.previous if pointers.unfinished else pointers.current
        previous_v = None if pointers.unfinished else pointers.previous
        valid_until = None
        if previous_v is not None and previous_v.tags.get(TAG_VALID_UNTIL):
            try:
                valid_until = parse_time(previous_v.tags[TAG_VALID_UNTIL])
            except ValueError:
                raise StoreError(f"{self.location(ref)} has a malformed valid-until tag") from None
        return StoreState(
            exists=True,
            owner_uid=owner,
            current=self._document(name, current_v, deadline),
            previous=self._document(name, previous_v, deadline),
            previous_valid_until=valid_until,
            pending=self._document(name, pointers.pending, deadline),
            handled=_handled(current_v.tags) if current_v is not None else {},
        )

    def _write_pending(
        self, ref: KeyRef, document: VersionDocument, deadline: Deadline
    ) -> VersionDocument:
        name = self.secret_name(ref)
        versions = self._owned(ref, name, deadline) or []
        pending = _pointers(versions).pending
        if pending is not None:
            existing = self._document(name, pending, deadline)
            if existing is None:
                raise StoreError(f"{self.location(ref)}: the pending version cannot be read")
            return existing
        # A number no version of this secret carries, revoked (disabled) ones included.
        used = {v.number for v in versions}
        number = document.version
        while number in used:
            number += 1
        stored = VersionDocument.from_json(
            dataclasses.replace(document, version=number).to_json()
        )
        tags = {
            TAG_MANAGED_BY: MANAGED_BY,
            TAG_OWNER_UID: ref.uid,
            TAG_NAMESPACE: ref.namespace,
            TAG_NAME: ref.name,
            TAG_VERSION: str(number),
            TAG_STAGE: PENDING,
        }
        self._call(deadline).set_secret(
            name,
            json.dumps({"key": stored.key, "document": stored.to_json()}),
            tags=tags,
            content_type=CONTENT_TYPE,
            # Never resent by the SDK: a PUT that landed but lost its answer would add a
            # second version (the next attempt lists the versions and finds this one).
            retry_total=0,
        )
        return stored

    def _promote(
        self, ref: KeyRef, version: int, valid_until: datetime, deadline: Deadline
    ) -> None:
        name = self.secret_name(ref)
        versions = self._owned(ref, name, deadline)
        if versions is None:
            raise StoreError(f"{self.location(ref)} does not exist; nothing to promote")
        pointers = _pointers(versions)
        if pointers.current is not None and pointers.current.number == version:
            return  # promoted already (a retry), whatever is pending now
        pending = pointers.pending
        if pending is None or pending.number != version:
            raise StoreError(f"{self.location(ref)}: version {version} is not the pending version")
        document = self._document(name, pending, deadline)
        if document is None:
            raise StoreError(f"{self.location(ref)}: pending version {version} cannot be read")
        if pointers.unfinished:
            old = pointers.previous
        else:
            if pointers.previous is not None:
                raise StoreError(
                    f"{self.location(ref)}: the previous version must be revoked before promoting"
                )
            old = pointers.current
        handled = answered(StoreState(handled=_handled(old.tags) if old is not None else {}),
                           document)
        if old is not None and not pointers.unfinished:
            # The old current turns previous first: a crash here leaves "pending, not yet
            # promoted" (see _pointers), and the retry only has the second write left.
            self._set_tags(name, old, deadline, {
                TAG_STAGE: PREVIOUS, TAG_VALID_UNTIL: format_time(valid_until)})
        promoted = {k: v for k, v in pending.tags.items() if not k.startswith(TAG_HANDLED_PREFIX)}
        promoted[TAG_STAGE] = CURRENT
        promoted.update({TAG_HANDLED_PREFIX + kind: encode_tag_value(token)
                         for kind, token in handled.items()})
        self._call(deadline).update_secret_properties(name, pending.vid, tags=promoted)

    def _revoke(self, ref: KeyRef, version: int, deadline: Deadline) -> None:
        name = self.secret_name(ref)
        versions = self._owned(ref, name, deadline)
        if versions is None:
            return
        pointers = _pointers(versions)
        for found in versions:
            if found.number != version or not found.enabled:
                continue
            if found is pointers.current or (pointers.unfinished and found is pointers.previous):
                raise StoreError(
                    f"{self.location(ref)}: version {version} is current; promote another "
                    "version before revoking it"
                )
            tags = {k: v for k, v in found.tags.items() if k != TAG_VALID_UNTIL}
            tags[TAG_STAGE] = REVOKED
            self._call(deadline).update_secret_properties(
                name, found.vid, enabled=False, tags=tags
            )

    def _delete(self, ref: KeyRef, deadline: Deadline) -> None:
        name = self.secret_name(ref)
        versions = self._owned(ref, name, deadline)
        client = self._call(deadline)
        if versions is not None:
            client.begin_delete_secret(name).wait(timeout=deadline.remaining())
        if not self.config.purge_on_delete:
            return
        # Also after a crash between the delete and the purge: purge only our own secret.
        try:
            deleted = client.get_deleted_secret(name)
        except azure_errors.ResourceNotFoundError:
            return
        tags = dict(deleted.properties.tags or {})
        if tags.get(TAG_MANAGED_BY) != MANAGED_BY or tags.get(TAG_OWNER_UID) != ref.uid:
            return
        self._call(deadline).purge_deleted_secret(name)

    # -- helpers ------------------------------------------------------------------------

    def _secret_client(self) -> SecretClient:
        with self._client_lock:
            if self._client is None:
                self._credential = self._make_credential()
                kwargs: dict[str, Any] = {
                    "verify_challenge_resource": self.config.verify_challenge_resource,
                    "connection_timeout": self.config.timeout,
                    "read_timeout": self.config.timeout,
                    # Throttling and 5xx come straight back (mapped to StoreUnavailable with
                    # the server's Retry-After): a worker thread must never sleep them out.
                    "retry_total": 1,
                    "retry_status": 0,
                    "retry_backoff_factor": 0.2,
                    "retry_backoff_max": 2,
                    "logging_enable": False,
                }
                if self.config.ca_file:
                    kwargs["connection_verify"] = self.config.ca_file
                self._client = SecretClient(self.config.vault_url, self._credential, **kwargs)
            return self._client

    def _make_credential(self) -> TokenCredential:
        # azure-identity is imported here only: building a store must not need it.
        import azure.identity

        auth = self.config.auth
        if auth.method == "client-secret":
            with open(auth.client_secret_file, encoding="utf-8") as handle:
                client_secret = handle.read().strip()
            kwargs: dict[str, Any] = {}
            if auth.authority_host:
                kwargs["authority"] = auth.authority_host
            return azure.identity.ClientSecretCredential(
                auth.tenant_id, auth.client_id, client_secret, **kwargs
            )
        return azure.identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)

    def _call(self, deadline: Deadline) -> SecretClient:
        deadline.remaining()
        return self._secret_client()

    def _versions(self, name: str, deadline: Deadline) -> list[_Version] | None:
        """Every version of the secret (disabled ones included); None when there is none."""
        try:
            listed = [
                _Version(vid=p.version or "", enabled=bool(p.enabled), tags=dict(p.tags or {}))
                for p in self._call(deadline).list_properties_of_secret_versions(name)
            ]
        except azure_errors.ResourceNotFoundError:
            return None
        return listed or None

    def _owned(self, ref: KeyRef, name: str, deadline: Deadline) -> list[_Version] | None:
        """The versions if the secret is absent (None) or ours; StoreConflict otherwise."""
        versions = self._versions(name, deadline)
        if versions is not None:
            check_owner(StoreState(exists=True, owner_uid=_owner_uid(versions)), ref,
                        self.location(ref))
        return versions

    def _set_tags(
        self, name: str, version: _Version, deadline: Deadline, changes: Mapping[str, str]
    ) -> None:
        tags = {**version.tags, **changes}
        if tags != version.tags:
            self._call(deadline).update_secret_properties(name, version.vid, tags=tags)

    def _document(
        self, name: str, version: _Version | None, deadline: Deadline
    ) -> VersionDocument | None:
        if version is None:
            return None
        secret = self._call(deadline).get_secret(name, version.vid)
        document = _parse_version(secret.value, version.vid)
        if document.version != version.number:
            raise StoreError(f"secret version {version.vid} holds an inconsistent document")
        return document


def _parse_version(text: str | None, vid: str) -> VersionDocument:
    """The document stored in one secret version, checked against the key beside it."""
    try:
        data = json.loads(text or "")
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("document"), str):
        raise StoreError(f"secret version {vid} does not hold an apikey-operator document")
    document = VersionDocument.from_json(data["document"])
    if document.key != data.get("key"):
        raise StoreError(f"secret version {vid} holds an inconsistent document")
    redaction.register(document.key)
    return document


@register("azure-key-vault")
def create_azure_store(
    name: str, config: Mapping[str, Any], operator_namespace: str, kube: object = None
) -> AzureKeyVaultStore:
    """Validate a `type: azure-key-vault` block and build its store (no Azure calls yet)."""
    return AzureKeyVaultStore(name, parse_config(name, config))
