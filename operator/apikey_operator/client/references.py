"""`status.storeRef` strings, parsed into the source that reads the key they name.

An application's environment holds a reference, never a key::

    kubernetes:<namespace>/<secret>          the built-in store's Secret
    vault:<mount>/<path>[?mount=<mount>]     Vault / OpenBao KV v2 (the query names a
                                             mount that itself contains slashes)
    aws:<secret name>[?region=<region>]      AWS Secrets Manager
    azure:<vault host>/<secret name>         Azure Key Vault
    file:<folder>/<data key>                 a mounted Secret

Without a ready `client`, each scheme builds its SDK's default client, which
finds its address and credentials the usual way: VAULT_ADDR / VAULT_TOKEN for
hvac, the default chain for boto3, DefaultAzureCredential for Key Vault, the
pod's service account for Kubernetes.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from apikey_operator.client.sources import (
    AwsSecretsManagerSource,
    AzureKeyVaultSource,
    KeySource,
    KubernetesSecretSource,
    MountedSecretSource,
    VaultSource,
)

SCHEMES = ("kubernetes", "vault", "aws", "azure", "file")
_FORMS = ("kubernetes:<namespace>/<secret>, vault:<mount>/<path>, aws:<secret name>"
          "[?region=...], azure:<vault host>/<secret name> or file:<folder>/<data key>")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_KV_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")
_REGION = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-\d{1,2}$")
_SEGMENT = re.compile(r"^[^/\s?#]+$")


class InvalidReference(ValueError):
    """The string is not a store reference in one of the documented forms."""


@dataclass(frozen=True)
class StoreReference:
    """A parsed reference: its scheme, the entry it names and its query options."""

    scheme: str
    location: str
    options: dict[str, str] = field(default_factory=dict)


def parse_reference(ref: str) -> StoreReference:
    """Split and check `ref`; raises InvalidReference naming what is wrong."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidReference(f"an empty store reference; expected {_FORMS}")
    scheme, colon, rest = ref.strip().partition(":")
    if not colon or scheme not in SCHEMES:
        raise InvalidReference(
            f"store reference {ref[:80]!r} has no known scheme; expected {_FORMS}"
        )
    location, _, query = rest.partition("?")
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise InvalidReference(f"store reference {ref[:80]!r} has a malformed query") from None
    options = dict(pairs)
    allowed = {"vault": {"mount"}, "aws": {"region"}}.get(scheme, set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidReference(
            f"store reference {ref[:80]!r}: unknown option(s) {', '.join(unknown)}"
        )
    parsed = StoreReference(scheme, location, options)
    _check(parsed, ref)
    return parsed


def _check(parsed: StoreReference, ref: str) -> None:
    def bad(why: str) -> InvalidReference:
        return InvalidReference(f"store reference {ref[:80]!r}: {why}")

    parts = parsed.location.split("/")
    if parsed.scheme == "kubernetes":
        if len(parts) != 2 or not _DNS_LABEL.fullmatch(parts[0]) \
                or not _DNS_SUBDOMAIN.fullmatch(parts[1]):
            raise bad("expected kubernetes:<namespace>/<secret name>")
    elif parsed.scheme == "vault":
        mount = parsed.options.get("mount")
        if mount is not None and (
            not mount.strip("/") or not parsed.location.startswith(mount.strip("/") + "/")
        ):
            raise bad("the mount option must be the start of the path")
        if len(parts) < 2 or not all(_SEGMENT.fullmatch(p) for p in parts):
            raise bad("expected vault:<mount>/<path>")
    elif parsed.scheme == "aws":
        if not parsed.location or any(c.isspace() for c in parsed.location):
            raise bad("expected aws:<secret name>")
        region = parsed.options.get("region")
        if region is not None and not _REGION.fullmatch(region):
            raise bad(f"{region!r} is not an AWS region")
    elif parsed.scheme == "azure":
        if len(parts) != 2 or not _HOST.fullmatch(parts[0]) or not _KV_NAME.fullmatch(parts[1]):
            raise bad("expected azure:<vault host>/<secret name>")
    elif parsed.scheme == "file" and (
        not parsed.location.startswith("/") or len(parts) < 3 or not parts[-1] or ".." in parts
    ):
        raise bad("expected file:/<absolute folder>/<data key>")


def source_for_reference(ref: str, *, client: Any = None) -> KeySource:
    """The source that reads the key `ref` names; `client` is a ready SDK client
    (hvac.Client, a boto3 secretsmanager client, a SecretClient) to use instead of
    the default one. For ``kubernetes:``, `client` may be a mapping with
    ``server``, ``token`` and ``ca_file``."""
    parsed = parse_reference(ref)
    location = parsed.location
    if parsed.scheme == "file":
        folder, _, key = location.rpartition("/")
        return MountedSecretSource(folder, key=key)
    if parsed.scheme == "kubernetes":
        namespace, name = location.split("/")
        connection = dict(client or {})
        return KubernetesSecretSource(namespace, name, **connection)
    if parsed.scheme == "vault":
        mount = parsed.options.get("mount", location.split("/", 1)[0]).strip("/")
        path = location[len(mount) + 1:]
        if client is None:
            import hvac

            client = hvac.Client()
        return VaultSource(client=client, mount=mount, path=path)
    if parsed.scheme == "aws":
        if client is None:
            import boto3

            client = boto3.client("secretsmanager", region_name=parsed.options.get("region"))
        return AwsSecretsManagerSource(client=client, secret_id=location)
    host, name = location.split("/")
    if client is None:
        from azure.identity import DefaultAzureCredential
        from azure.keyvault.secrets import SecretClient

        client = SecretClient(f"https://{host}", DefaultAzureCredential())
    return AzureKeyVaultSource(client=client, name=name)
