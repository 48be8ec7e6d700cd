"""AWS Secrets Manager store (boto3), following the AWS rotation model.

Layout, read as-is by `apikey_operator.client.AwsSecretsManagerSource`:

* one secret per ApiKey, named ``<namePrefix><namespace>/<name>``, created without a
  value and tagged ``managed-by=apikey-operator``, ``apikeys.dev/owner-uid``,
  ``apikeys.dev/namespace`` and ``apikeys.dev/name`` (optionally encrypted with
  ``kmsKeyId``); its description lists the scopes;
* each key version is a secret version whose SecretString is
  ``{"key": <key>, "document": <VersionDocument JSON>}`` and whose VersionId is derived
  from (ApiKey uid, document version), so a retried write is idempotent;
* the pointers are the staging labels: AWSPENDING (written, not promoted), AWSCURRENT,
  AWSPREVIOUS (AWS moves it to the old current on promotion);
* tags ``apikeys.dev/previous-valid-until`` and ``apikeys.dev/handled-<kind>`` hold the
  rest of the bookkeeping (tokens outside the tag character set are stored as
  ``b64:<base64url>``).

AWS cannot destroy a single version: revoking removes every staging label from it,
so no client reading by stage can get it again, but it stays readable by its
VersionId (to principals allowed to read the secret) until AWS drops unlabelled
versions or the secret is deleted. AWSCURRENT cannot be removed from a version
without moving it to another one, so the current version cannot be revoked (the
rotation engine only ever revokes the previous key, after promoting a new one).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import boto3
import botocore.config
import botocore.exceptions

from apikey_operator import redaction
from apikey_operator.stores import register
from apikey_operator.stores.base import (
    MANAGED_BY,
    Capabilities,
    EntryUnusable,
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

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

# botocore logs SecretString bodies at DEBUG: never let them reach a handler.
silence_sdk_body_logging()

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
TAG_MANAGED_BY = "managed-by"
TAG_OWNER_UID = "apikeys.dev/owner-uid"
TAG_NAMESPACE = "apikeys.dev/namespace"
TAG_NAME = "apikeys.dev/name"
TAG_VALID_UNTIL = "apikeys.dev/previous-valid-until"
TAG_HANDLED_PREFIX = "apikeys.dev/handled-"
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 256
MAX_SECRET_NAME = 512
MAX_DESCRIPTION = 2048
# Characters AWS accepts in tag values everywhere; other tokens are stored base64url-encoded.
_TAG_SAFE = re.compile(r"^[\w .:/=+\-@]*$")
_ENCODED = "b64:"
_VERSION_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://apikeys.dev/aws-secrets-manager/version")

_REGION = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-\d{1,2}$")
_NAME_PREFIX = re.compile(r"^[A-Za-z0-9/_+=.@-]*$")
_ENDPOINT = re.compile(r"^https?://[^/\s]+/?$")

_THROTTLED = {"ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded",
              "Throttling", "LimitExceededException"}
_UNAVAILABLE = {"InternalServiceError", "InternalFailure", "ServiceUnavailable",
                "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException"}
_DENIED = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
           "InvalidSignatureException", "ExpiredTokenException", "InvalidClientTokenId",
           "SignatureDoesNotMatch", "KMSAccessDeniedException"}


@dataclass(frozen=True)
class AwsConfig:
    """A validated `type: aws-secrets-manager` config block."""

    region: str
    name_prefix: str = "apikeys/"
    endpoint_url: str | None = None
    kms_key_id: str | None = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY


def parse_config(store_name: str, raw: Mapping[str, Any]) -> AwsConfig:
    """Validate a config block; raises StoreConfigError naming every bad field."""
    reader = ConfigReader(store_name, raw)
    region = reader.string("region", pattern=_REGION, hint="expected e.g. eu-west-1")
    prefix = reader.string(
        "namePrefix", "apikeys/", pattern=_NAME_PREFIX,
        hint="letters, digits and /_+=.@- only",
    )
    if len(prefix) > 200:
        reader.problem("namePrefix", "must be at most 200 characters")
    endpoint = reader.optional_string("endpointUrl")
    if endpoint is not None and not _ENDPOINT.fullmatch(endpoint):
        reader.problem("endpointUrl", f"{endpoint!r} is not valid: expected http(s)://host[:port]")
    kms_key_id = reader.optional_string("kmsKeyId")
    timeout = reader.number("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS, minimum=0.1, maximum=300)
    concurrency = reader.integer("maxConcurrency", DEFAULT_MAX_CONCURRENCY, minimum=1, maximum=64)
    reader.no_unknown_fields()
    reader.done()
    return AwsConfig(
        region=region,
        name_prefix=prefix,
        endpoint_url=endpoint.rstrip("/") if endpoint else None,
        kms_key_id=kms_key_id,
        timeout=timeout,
        max_concurrency=concurrency,
    )


def version_id(uid: str, version: int) -> str:
    """The VersionId (ClientRequestToken) of document `version` of the ApiKey `uid`."""
    return str(uuid.uuid5(_VERSION_NAMESPACE, f"{uid}/{version}"))


def encode_tag_value(token: str) -> str:
    """`token` as a tag value: verbatim when AWS accepts its characters, else base64url."""
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


def _classify(store_name: str) -> Callable[[BaseException, str], StoreError | None]:
    def classify(exc: BaseException, operation: str) -> StoreError | None:
        where = f"store {store_name!r}: {operation}"
        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            message = str(error.get("Message", ""))[:200]
            if code in _THROTTLED or status == 429:
                return StoreUnavailable(f"{where}: throttled by AWS ({code})", retry_after=5.0)
            if code in _UNAVAILABLE or status >= 500:
                return StoreUnavailable(f"{where}: AWS answered {code or status}")
            if code == "InvalidRequestException" and "delet" in message.lower():
                return EntryUnusable(
                    f"{where}: the secret is scheduled for deletion ({message})", retry_after=30.0
                )
            if code in _DENIED:
                return StoreError(
                    f"{where}: AWS denied the request ({code}); check the operator's IAM "
                    "permissions and credentials"
                )
            return StoreError(f"{where}: AWS refused the request ({code}: {message})")
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return StoreError(f"{where}: no AWS credentials found in the default chain")
        if isinstance(exc, botocore.exceptions.SSLError):
            return StoreError(f"{where}: TLS verification of the AWS endpoint failed")
        timeouts = botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError
        if isinstance(exc, timeouts):
            return StoreUnavailable(f"{where}: AWS timed out")
        if isinstance(exc, botocore.exceptions.EndpointConnectionError
                      | botocore.exceptions.ConnectionClosedError
                      | botocore.exceptions.HTTPClientError):
            return StoreUnavailable(f"{where}: cannot connect to AWS Secrets Manager")
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return StoreError(f"{where}: AWS SDK error ({type(exc).__name__})")
        return None

    return classify


@dataclass(frozen=True)
class _Secret:
    """What describe_secret says about one secret, as far as this store cares."""

    tags: dict[str, str]
    stages: dict[str, list[str]]
    description: str
    # Scheduled for deletion (or being force-deleted): AWS refuses reads and writes.
    deleted: bool = False

    @property
    def owner_uid(self) -> str:
        if self.tags.get(TAG_MANAGED_BY) != MANAGED_BY:
            return ""
        return self.tags.get(TAG_OWNER_UID, "")

    def labelled(self, label: str) -> str | None:
        for vid, labels in self.stages.items():
            if label in labels:
                return vid
        return None


class AwsSecretsManagerStore(BlockingStore):
    """Key versions in AWS Secrets Manager (see the module docstring for the layout)."""

    type_name: ClassVar[str] = "aws-secrets-manager"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, name: str, config: AwsConfig) -> None:
        self.name = name
        self.config = config
        self._client_lock = threading.Lock()
        self._client: SecretsManagerClient | None = None
        self._runner = BlockingRunner(
            name, _classify(name), max_concurrency=config.max_concurrency, timeout=config.timeout
        )

    # -- Protocol -----------------------------------------------------------------------

    def location(self, ref: KeyRef) -> str:
        return f"aws:{self.secret_name(ref)}?region={self.config.region}"

    def secret_name(self, ref: KeyRef) -> str:
        """`<namePrefix><namespace>/<name>`, checked to hold exactly those two segments."""
        check_ref_names(ref)
        name = f"{self.config.name_prefix}{ref.namespace}/{ref.name}"
        tail = name[len(self.config.name_prefix):].split("/")
        if tail != [ref.namespace, ref.name] or len(name) > MAX_SECRET_NAME:
            raise StoreError(f"refusing the derived secret name {name!r}")
        return name

    def _check_document(self, document: VersionDocument) -> None:
        _check_handles(document)

    async def close(self) -> None:
        self._runner.close()
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- steps (blocking, in a worker thread) ---------------------------------------------

    def _read(self, ref: KeyRef, deadline: Deadline) -> StoreState:
        name = self.secret_name(ref)
        secret = self._describe(name, deadline)
        if secret is None:
            return StoreState()
        if secret.owner_uid != ref.uid or not ref.uid:
            # Not ours: report who owns it, never load its versions.
            return StoreState(exists=True, owner_uid=secret.owner_uid)
        self._refuse_deleted(ref, secret)
        current_vid, pending_vid, previous_vid = self._pointers(secret)
        current = self._version(name, current_vid, deadline)
        previous = self._version(name, previous_vid, deadline)
        pending = self._version(name, pending_vid, deadline)
        valid_until = None
        if previous is not None and secret.tags.get(TAG_VALID_UNTIL):
            try:
                valid_until = parse_time(secret.tags[TAG_VALID_UNTIL])
            except ValueError:
                raise StoreError(f"{self.location(ref)} has a malformed valid-until tag") from None
        handled = _handled(secret.tags)
        return StoreState(
            exists=True,
            owner_uid=secret.owner_uid,
            current=current,
            previous=previous,
            previous_valid_until=valid_until,
            pending=pending,
            handled=handled,
        )

    def _write_pending(
        self, ref: KeyRef, document: VersionDocument, deadline: Deadline
    ) -> VersionDocument:
        name = self.secret_name(ref)
        secret = self._owned(ref, name, deadline)
        created = secret is None
        if secret is None:
            secret = self._create(ref, name, document, deadline)
        pending_vid = secret.labelled(PENDING)
        if pending_vid is not None:
            existing = self._version(name, pending_vid, deadline)
            if existing is None:
                raise StoreError(f"{self.location(ref)}: the pending version cannot be read")
            return existing
        # A version number whose VersionId this secret has never seen (a revoked pending
        # keeps its VersionId, and a VersionId cannot be reused with other content).
        # describe_secret omits unlabelled versions, hence the listing.
        used = set() if created else set(secret.stages) | self._version_ids(name, deadline)
        number = document.version
        while version_id(ref.uid, number) in used:
            number += 1
        stored = VersionDocument.from_json(
            dataclasses.replace(document, version=number).to_json()
        )
        self._call(deadline).put_secret_value(
            SecretId=name,
            ClientRequestToken=version_id(ref.uid, number),
            SecretString=json.dumps({"key": stored.key, "document": stored.to_json()}),
            VersionStages=[PENDING],
        )
        return stored

    def _promote(
        self, ref: KeyRef, version: int, valid_until: datetime, deadline: Deadline
    ) -> None:
        name = self.secret_name(ref)
        secret = self._owned(ref, name, deadline)
        if secret is None:
            raise StoreError(f"{self.location(ref)} does not exist; nothing to promote")
        pending_vid = secret.labelled(PENDING)
        current_vid = secret.labelled(CURRENT)
        if current_vid is not None and current_vid != pending_vid:
            current = self._version(name, current_vid, deadline)
            if current is not None and current.version == version:
                return  # promoted already (a retry), whatever is pending now
        if pending_vid is None:
            raise StoreError(f"{self.location(ref)}: version {version} is not the pending version")
        pending = self._version(name, pending_vid, deadline)
        if pending is None or pending.version != version:
            raise StoreError(f"{self.location(ref)}: version {version} is not the pending version")
        # AWSCURRENT already on the pending version: the very first version (AWS labels it
        # current on its own) or a promotion interrupted after the move. Either way only
        # the bookkeeping and the AWSPENDING removal are left.
        finishing = current_vid == pending_vid
        if not finishing and secret.labelled(PREVIOUS) is not None:
            raise StoreError(
                f"{self.location(ref)}: the previous version must be revoked before promoting"
            )
        # Tags (and the description) first: once AWSCURRENT moves, the old version is
        # AWSPREVIOUS and must already carry its valid-until; a crash or a refused call
        # before the move leaves only a tag nothing reads.
        tags = {TAG_HANDLED_PREFIX + kind: encode_tag_value(token)
                for kind, token in answered(StoreState(handled=_handled(secret.tags)),
                                            pending).items()}
        if finishing:
            # Interrupted after the move: the tag was written before it, unless lost.
            needs_valid_until = (secret.labelled(PREVIOUS) is not None
                                 and TAG_VALID_UNTIL not in secret.tags)
        else:
            needs_valid_until = current_vid is not None
        if needs_valid_until:
            tags[TAG_VALID_UNTIL] = format_time(valid_until)
        changed = {k: v for k, v in tags.items() if secret.tags.get(k) != v}
        if changed:
            self._call(deadline).tag_resource(
                SecretId=name, Tags=[{"Key": k, "Value": v} for k, v in changed.items()]
            )
        description = _description(ref, pending.scopes)
        if secret.description != description:
            self._call(deadline).update_secret(SecretId=name, Description=description)
        if not finishing:
            if current_vid is None:
                self._call(deadline).update_secret_version_stage(
                    SecretId=name, VersionStage=CURRENT, MoveToVersionId=pending_vid
                )
            else:
                self._call(deadline).update_secret_version_stage(
                    SecretId=name, VersionStage=CURRENT, MoveToVersionId=pending_vid,
                    RemoveFromVersionId=current_vid,
                )
        self._call(deadline).update_secret_version_stage(
            SecretId=name, VersionStage=PENDING, RemoveFromVersionId=pending_vid
        )

    def _revoke(self, ref: KeyRef, version: int, deadline: Deadline) -> None:
        name = self.secret_name(ref)
        secret = self._owned(ref, name, deadline)
        if secret is None:
            return
        vid = version_id(ref.uid, version)
        labels = [label for label in secret.stages.get(vid, []) if label.startswith("AWS")]
        if CURRENT in labels:
            raise StoreError(
                f"{self.location(ref)}: version {version} is AWSCURRENT, which AWS Secrets "
                "Manager cannot remove; promote another version first"
            )
        for label in labels:
            self._call(deadline).update_secret_version_stage(
                SecretId=name, VersionStage=label, RemoveFromVersionId=vid
            )
        if PREVIOUS in labels and TAG_VALID_UNTIL in secret.tags:
            self._call(deadline).untag_resource(SecretId=name, TagKeys=[TAG_VALID_UNTIL])

    def _delete(self, ref: KeyRef, deadline: Deadline) -> None:
        name = self.secret_name(ref)
        secret = self._owned(ref, name, deadline, allow_deleted=True)
        if secret is None or secret.deleted:
            return
        self._call(deadline).delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)

    # -- helpers ------------------------------------------------------------------------

    def _sm(self) -> SecretsManagerClient:
        """The shared client (boto3 clients are thread-safe; sessions are not)."""
        with self._client_lock, _session_lock:
            if self._client is None:
                config = botocore.config.Config(
                    connect_timeout=self.config.timeout,
                    read_timeout=self.config.timeout,
                    retries={"mode": "standard", "total_max_attempts": 2},
                    max_pool_connections=self.config.max_concurrency,
                )
                self._client = _shared_session().client(
                    "secretsmanager",
                    region_name=self.config.region,
                    endpoint_url=self.config.endpoint_url,
                    config=config,
                )
            return self._client

    def _call(self, deadline: Deadline) -> SecretsManagerClient:
        """The client, once the operation's deadline has been checked."""
        deadline.remaining()
        return self._sm()

    def _describe(self, name: str, deadline: Deadline) -> _Secret | None:
        try:
            response = self._call(deadline).describe_secret(SecretId=name)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        return _Secret(
            tags={t["Key"]: t["Value"] for t in response.get("Tags", [])},
            stages={k: list(v) for k, v in response.get("VersionIdsToStages", {}).items()},
            description=response.get("Description", ""),
            deleted="DeletedDate" in response,
        )

    def _owned(
        self, ref: KeyRef, name: str, deadline: Deadline, *, allow_deleted: bool = False
    ) -> _Secret | None:
        """The secret if it is absent (None) or ours; StoreConflict otherwise."""
        secret = self._describe(name, deadline)
        if secret is not None:
            state = StoreState(exists=True, owner_uid=secret.owner_uid)
            check_owner(state, ref, self.location(ref))
            if not allow_deleted:
                self._refuse_deleted(ref, secret)
        return secret

    def _refuse_deleted(self, ref: KeyRef, secret: _Secret) -> None:
        if secret.deleted:
            raise EntryUnusable(
                f"{self.location(ref)} is scheduled for deletion; AWS refuses to use it until "
                "it is restored or gone",
                retry_after=30.0,
            )

    def _create(
        self, ref: KeyRef, name: str, document: VersionDocument, deadline: Deadline
    ) -> _Secret:
        tags = {
            TAG_MANAGED_BY: MANAGED_BY,
            TAG_OWNER_UID: ref.uid,
            TAG_NAMESPACE: ref.namespace,
            TAG_NAME: ref.name,
        }
        kwargs: dict[str, Any] = {}
        if self.config.kms_key_id:
            kwargs["KmsKeyId"] = self.config.kms_key_id
        description = _description(ref, document.scopes)
        try:
            self._call(deadline).create_secret(
                Name=name,
                Description=description,
                Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
                **kwargs,
            )
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceExistsException":
                raise
            # Created meanwhile (a retried request that had landed): decide on what is there.
            secret = self._owned(ref, name, deadline)
            if secret is not None:
                return secret
        return _Secret(tags=tags, stages={}, description=description)

    def _pointers(self, secret: _Secret) -> tuple[str | None, str | None, str | None]:
        """(current, pending, previous) VersionIds as the rotation steps see them.

        AWSCURRENT and AWSPENDING on one version means a promotion has not finished: the
        very first version (AWS makes it current by itself) or a crash after AWSCURRENT
        moved, in which case the old current already wears AWSPREVIOUS. Both read as
        "pending not yet promoted", the old current still current.
        """
        current, pending, previous = (secret.labelled(x) for x in (CURRENT, PENDING, PREVIOUS))
        if current is not None and current == pending:
            return previous, pending, None
        return current, pending, previous

    def _version_ids(self, name: str, deadline: Deadline) -> set[str]:
        """Every VersionId the secret still has, unlabelled (deprecated) ones included."""
        found: set[str] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"NextToken": token} if token else {}
            page = self._call(deadline).list_secret_version_ids(
                SecretId=name, IncludeDeprecated=True, MaxResults=100, **kwargs
            )
            found.update(v["VersionId"] for v in page.get("Versions", []) if "VersionId" in v)
            token = page.get("NextToken")
            if not token:
                return found

    def _version(self, name: str, vid: str | None, deadline: Deadline) -> VersionDocument | None:
        if vid is None:
            return None
        try:
            response = self._call(deadline).get_secret_value(SecretId=name, VersionId=vid)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise
        return _parse_version(response.get("SecretString"), vid)


_session_lock = threading.Lock()
_session: boto3.session.Session | None = None


def _shared_session() -> boto3.session.Session:
    """One boto3 session for every store: it caches service models and credentials (a
    client from a fresh session costs ~0.3 s). Sessions are not thread-safe, so clients
    are only ever created under `_session_lock`."""
    global _session
    if _session is None:
        _session = boto3.session.Session()
    return _session


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


def _description(ref: KeyRef, scopes: tuple[str, ...]) -> str:
    text = f"API key of ApiKey {ref.namespace}/{ref.name}, managed by apikey-operator"
    if scopes:
        text += "; scopes: " + ",".join(scopes)
    return text[:MAX_DESCRIPTION]


def _handled(tags: Mapping[str, str]) -> dict[str, str]:
    # `trigger` was once kept among the handles (and so tagged); it answers nothing.
    return {key[len(TAG_HANDLED_PREFIX):]: decode_tag_value(value) for key, value in tags.items()
            if key.startswith(TAG_HANDLED_PREFIX) and key != TAG_HANDLED_PREFIX + "trigger"}


def _check_handles(document: VersionDocument) -> None:
    for kind, token in document.handles.items():
        if len(TAG_HANDLED_PREFIX + kind) > MAX_TAG_KEY or not _TAG_SAFE.fullmatch(kind):
            raise StoreError(f"trigger kind {kind[:32]!r} cannot be a tag key")
        if len(encode_tag_value(token)) > MAX_TAG_VALUE:
            raise StoreError(
                f"the {kind} token does not fit a {MAX_TAG_VALUE}-character tag; hash it first"
            )


@register("aws-secrets-manager")
def create_aws_store(
    name: str, config: Mapping[str, Any], operator_namespace: str, kube: object = None
) -> AwsSecretsManagerStore:
    """Validate a `type: aws-secrets-manager` block and build its store (no AWS calls yet)."""
    return AwsSecretsManagerStore(name, parse_config(name, config))
