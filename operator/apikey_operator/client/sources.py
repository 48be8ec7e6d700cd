"""Where an ApiKeyProvider reads the current key from.

A source is anything with a blocking ``read() -> str`` that returns the current
key or raises SourceUnavailable; `description` names it in logs and errors.
The store SDKs are never imported here at module level: the Vault and AWS
sources receive a ready client and import the SDK's exception types only when
they have to classify an error.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from apikey_operator.client._volume import decode_key, read_snapshot
from apikey_operator.client.errors import SourceUnavailable

# The layout the operator's stores write (fixed):
#  * Vault KV v2: custom_metadata["current"] (and ["previous"] during a grace) is the
#    KV version number; each version's data is {"key": ..., "document": ...}.
#  * AWS Secrets Manager: the AWSCURRENT version's SecretString is the same JSON
#    (see AwsSecretsManagerSource for the unfinished-promotion case).
#  * Azure Key Vault: the enabled version tagged stage=current holds the same JSON
#    (see AzureKeyVaultSource for the unfinished-promotion case).
#  * Kubernetes (the built-in store): a Secret whose annotation apikeys.dev/store-state
#    names the current version N; data["v<N>"] is the version document, with "key".
VAULT_CURRENT_METADATA = "current"
AZURE_STAGE_TAG = "stage"
AZURE_VERSION_TAG = "version"
KUBERNETES_STATE_ANNOTATION = "apikeys.dev/store-state"
AWS_CURRENT_STAGE = "AWSCURRENT"
AWS_PENDING_STAGE = "AWSPENDING"
AWS_PREVIOUS_STAGE = "AWSPREVIOUS"
KEY_FIELD = "key"


@runtime_checkable
class KeySource(Protocol):
    """Produces the current key. Must be safe to call from several threads."""

    description: str

    def read(self) -> str:
        """The current key; raises SourceUnavailable when it cannot be produced."""
        ...


class MountedSecretSource:
    """Reads one data key of a Secret mounted as a volume (no Kubernetes API access needed).

    Each read resolves the kubelet's ``..data`` symlink once and reads the file in
    that version's directory, so it never returns a half-written or mixed value.
    """

    def __init__(self, directory: str, key: str = "api-key") -> None:
        self.directory = directory
        self.key = key
        self.description = f"file:{directory}/{key}"

    def read(self) -> str:
        snapshot = read_snapshot(self.directory, [self.key])
        value = decode_key(snapshot.values[self.key])
        if value is None:
            raise SourceUnavailable(f"{self.description} is missing, empty or not UTF-8 text")
        return value


class VaultSource:
    """Reads the current key the operator keeps in Vault / OpenBao KV v2.

    The KV metadata's ``current`` custom field names the version to read: the
    latest version may be a pending key that is not yet promoted, so it is
    never read blindly.
    """

    def __init__(self, client: Any, mount: str = "secret", path: str = "") -> None:
        if not path:
            raise ValueError("VaultSource needs the entry's path, e.g. 'apikeys/<ns>/<name>'")
        self.client = client
        self.mount = mount.strip("/")
        self.path = path.strip("/")
        self.description = f"vault:{self.mount}/{self.path}"

    def read(self) -> str:
        try:
            return self._read()
        except SourceUnavailable:
            raise
        except Exception as exc:
            error, known = self._classify(exc)
            # Chain only the SDK's own errors; anything else could quote the response.
            raise error from (exc if known else None)

    def _read(self) -> str:
        kv = self.client.secrets.kv.v2
        metadata = kv.read_secret_metadata(path=self.path, mount_point=self.mount)
        custom = (metadata.get("data") or {}).get("custom_metadata") or {}
        current: Any = custom.get(VAULT_CURRENT_METADATA)
        try:
            version = int(current)
        except (TypeError, ValueError):
            raise SourceUnavailable(
                f"{self.description} has no current key version (custom metadata "
                f"{VAULT_CURRENT_METADATA!r} is missing or not a number)"
            ) from None
        response = kv.read_secret_version(
            path=self.path,
            version=version,
            mount_point=self.mount,
            raise_on_deleted_version=True,
        )
        data = ((response or {}).get("data") or {}).get("data") or {}
        key = data.get(KEY_FIELD) if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            raise SourceUnavailable(
                f"{self.description} version {version} holds no {KEY_FIELD!r} field"
            )
        return key

    def _classify(self, exc: Exception) -> tuple[SourceUnavailable, bool]:
        """The error to raise for `exc`, and whether `exc` is a known transport/API error."""
        # hvac and requests are present whenever a client was built; import them only
        # here so that the library stays importable without them.
        import hvac.exceptions
        import requests

        if isinstance(exc, hvac.exceptions.InvalidPath):
            reason = "the entry or its current version does not exist"
        elif isinstance(exc, hvac.exceptions.VaultDown):
            reason = "Vault is sealed or down"
        elif isinstance(exc, hvac.exceptions.RateLimitExceeded):
            reason = "throttled by Vault"
        elif isinstance(exc, hvac.exceptions.Forbidden):
            reason = "permission denied"
        elif isinstance(exc, hvac.exceptions.Unauthorized):
            reason = "the Vault token is invalid or expired"
        elif isinstance(exc, hvac.exceptions.VaultError):
            reason = f"Vault answered an error ({type(exc).__name__})"
        elif isinstance(exc, requests.Timeout):
            reason = "timed out"
        elif isinstance(exc, requests.ConnectionError):
            reason = "cannot connect"
        elif isinstance(exc, requests.RequestException):
            reason = f"request failed ({type(exc).__name__})"
        else:
            return SourceUnavailable(f"{self.description}: unexpected {type(exc).__name__}"), False
        return SourceUnavailable(f"{self.description}: {reason}"), True


class AwsSecretsManagerSource:
    """Reads the current key the operator keeps in AWS Secrets Manager.

    That is the version labelled AWSCURRENT, except while a promotion is unfinished:
    AWS labels a secret's very first version AWSCURRENT on its own, and a promotion
    interrupted after moving AWSCURRENT leaves AWSPENDING on the same version. The
    operator then still counts the AWSPREVIOUS version as current, and so does this
    source; with no such version (the first key is not promoted yet) there is no key.
    """

    def __init__(self, client: Any, secret_id: str) -> None:
        if not secret_id:
            raise ValueError("AwsSecretsManagerSource needs a secret_id like 'apikeys/<ns>/<name>'")
        self.client = client
        self.secret_id = secret_id
        self.description = f"aws:{secret_id}"

    def read(self) -> str:
        response = self._get(AWS_CURRENT_STAGE)
        if AWS_PENDING_STAGE in (response.get("VersionStages") or ()):
            try:
                response = self._get(AWS_PREVIOUS_STAGE)
            except SourceUnavailable:
                raise SourceUnavailable(
                    f"{self.description}: no promoted key yet (the first key is still pending)"
                ) from None
        return self._key(response)

    def _get(self, stage: str) -> Any:
        try:
            return self.client.get_secret_value(SecretId=self.secret_id, VersionStage=stage)
        except Exception as exc:
            error, known = self._classify(exc)
            raise error from (exc if known else None)

    def _key(self, response: Any) -> str:
        text = response.get("SecretString")
        try:
            key = json.loads(text)[KEY_FIELD] if isinstance(text, str) else None
        except (ValueError, KeyError, TypeError):
            key = None
        if not isinstance(key, str) or not key:
            # `from None`: a parse error could quote part of the secret.
            raise SourceUnavailable(
                f"{self.description}: the current version is not the operator's "
                f"JSON document with a {KEY_FIELD!r} field"
            ) from None
        return key

    def _classify(self, exc: Exception) -> tuple[SourceUnavailable, bool]:
        """The error to raise for `exc`, and whether `exc` is a known transport/API error."""
        import botocore.exceptions

        if isinstance(exc, botocore.exceptions.ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "unknown"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            reason = f"AWS answered {code}" + (f" (HTTP {status})" if status else "")
        elif isinstance(
            exc, botocore.exceptions.ConnectTimeoutError | botocore.exceptions.ReadTimeoutError
        ):
            reason = "timed out"
        elif isinstance(exc, botocore.exceptions.EndpointConnectionError):
            reason = "cannot connect"
        elif isinstance(exc, botocore.exceptions.NoCredentialsError):
            reason = "no AWS credentials"
        elif isinstance(exc, botocore.exceptions.BotoCoreError):
            reason = f"request failed ({type(exc).__name__})"
        else:
            return SourceUnavailable(f"{self.description}: unexpected {type(exc).__name__}"), False
        return SourceUnavailable(f"{self.description}: {reason}"), True


class AzureKeyVaultSource:
    """Reads the current key the operator keeps in Azure Key Vault.

    That is the enabled version tagged ``stage=current``. While a promotion is
    unfinished (the old current already tagged ``previous``, the new one still
    ``pending``) the operator still counts the old one as current, and so does
    this source. Revoked versions are disabled, so Key Vault refuses to return them.
    """

    def __init__(self, client: Any, name: str) -> None:
        if not name:
            raise ValueError("AzureKeyVaultSource needs the secret's name, as in status.storeRef")
        self.client = client
        self.name = name
        vault_url = str(getattr(client, "vault_url", "") or "")
        host = vault_url.split("://", 1)[-1].rstrip("/")
        self.description = f"azure:{host}/{name}" if host else f"azure:{name}"

    def read(self) -> str:
        try:
            return self._read()
        except SourceUnavailable:
            raise
        except Exception as exc:
            error, known = self._classify(exc)
            raise error from (exc if known else None)

    def _read(self) -> str:
        enabled = [p for p in self.client.list_properties_of_secret_versions(self.name)
                   if p.enabled]

        def staged(stage: str) -> Any:
            found = [p for p in enabled if (p.tags or {}).get(AZURE_STAGE_TAG) == stage]
            return max(found, key=_version_number, default=None)

        chosen = staged("current")
        if chosen is None and staged("pending") is not None:
            chosen = staged("previous")
        if chosen is None:
            raise SourceUnavailable(f"{self.description} has no current key version")
        value = self.client.get_secret(self.name, chosen.version).value
        try:
            key = json.loads(value)[KEY_FIELD] if isinstance(value, str) else None
        except (ValueError, KeyError, TypeError):
            key = None
        if not isinstance(key, str) or not key:
            raise SourceUnavailable(
                f"{self.description}: the current version is not the operator's "
                f"JSON document with a {KEY_FIELD!r} field"
            ) from None
        return key

    def _classify(self, exc: Exception) -> tuple[SourceUnavailable, bool]:
        """The error to raise for `exc`, and whether `exc` is a known transport/API error."""
        import azure.core.exceptions as errors

        if isinstance(exc, errors.ResourceNotFoundError):
            reason = "the secret does not exist"
        elif isinstance(exc, errors.ClientAuthenticationError):
            reason = f"authentication failed ({type(exc).__name__})"
        elif isinstance(exc, errors.HttpResponseError):
            reason = f"Key Vault answered HTTP {exc.status_code}"
        elif isinstance(exc, errors.ServiceRequestError | errors.ServiceResponseError):
            reason = "cannot connect or timed out"
        elif isinstance(exc, errors.AzureError):
            reason = f"request failed ({type(exc).__name__})"
        else:
            return SourceUnavailable(f"{self.description}: unexpected {type(exc).__name__}"), False
        # No chaining of the SDK error either: its message can quote the response.
        return SourceUnavailable(f"{self.description}: {reason}"), False


def _version_number(properties: Any) -> int:
    try:
        return int((properties.tags or {}).get(AZURE_VERSION_TAG, ""))
    except ValueError:
        return 0


class KubernetesSecretSource:
    """Reads the current key from the built-in store's Secret through the Kubernetes API.

    `server`, `token` and `ca_file` default to the pod's in-cluster service account.
    The reader needs `get` on that one Secret (in the operator's namespace): most
    applications should mount their projected Secret and use MountedSecretSource.
    """

    SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

    def __init__(
        self,
        namespace: str,
        name: str,
        *,
        server: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not namespace or not name:
            raise ValueError("KubernetesSecretSource needs the Secret's namespace and name")
        self.namespace = namespace
        self.name = name
        self.server = server
        self.token = token
        self.ca_file = ca_file
        self.timeout = timeout
        self.description = f"kubernetes:{namespace}/{name}"

    def _connection(self) -> tuple[str, str, str | None]:
        import os

        server, token, ca_file = self.server, self.token, self.ca_file
        if server is None:
            host = os.environ.get("KUBERNETES_SERVICE_HOST")
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise SourceUnavailable(
                    f"{self.description}: not in a cluster and no server given"
                )
            server = f"https://{host}:{port}"
            ca_file = ca_file or f"{self.SERVICE_ACCOUNT}/ca.crt"
        if token is None:
            try:
                with open(f"{self.SERVICE_ACCOUNT}/token", encoding="utf-8") as handle:
                    token = handle.read().strip()
            except OSError:
                raise SourceUnavailable(
                    f"{self.description}: no service-account token to authenticate with"
                ) from None
        return server.rstrip("/"), token, ca_file

    def read(self) -> str:
        import base64
        import ssl
        import urllib.error
        import urllib.parse
        import urllib.request

        server, token, ca_file = self._connection()
        url = (f"{server}/api/v1/namespaces/{urllib.parse.quote(self.namespace)}"
               f"/secrets/{urllib.parse.quote(self.name)}")
        if not url.startswith("https://"):
            raise SourceUnavailable(f"{self.description}: the API server must be https")
        request = urllib.request.Request(  # noqa: S310 (https only, checked above)
            url, headers={"Authorization": f"Bearer {token}"}
        )
        context = ssl.create_default_context(cafile=ca_file)
        try:
            with urllib.request.urlopen(  # noqa: S310 (https to the API server)
                request, timeout=self.timeout, context=context
            ) as response:
                secret = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            reason = {404: "the Secret does not exist", 403: "permission denied",
                      401: "the token was not accepted"}.get(exc.code, f"HTTP {exc.code}")
            raise SourceUnavailable(f"{self.description}: {reason}") from None
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(
                f"{self.description}: cannot read it ({type(exc).__name__})"
            ) from None
        metadata = secret.get("metadata") or {}
        try:
            book = json.loads((metadata.get("annotations") or {})[KUBERNETES_STATE_ANNOTATION])
            number = int(book["current"])
            raw = (secret.get("data") or {})[f"v{number}"]
            key = json.loads(base64.b64decode(raw, validate=True))[KEY_FIELD]
        except (KeyError, ValueError, TypeError):
            key = None
        if not isinstance(key, str) or not key:
            raise SourceUnavailable(f"{self.description} has no current key version") from None
        return key


def source_description(source: object) -> str:
    """How to name a source in logs: its `description`, else its type."""
    description = getattr(source, "description", None)
    return description if isinstance(description, str) else type(source).__name__
