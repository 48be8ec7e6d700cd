"""The consumer library: for applications that use API keys and services that accept them.

Importable without kopf, lightkube or the operator's runtime; hvac and boto3 are
only needed by whoever builds the client passed to VaultSource /
AwsSecretsManagerSource.
"""

from apikey_operator.client.errors import SourceUnavailable
from apikey_operator.client.keyring import KeyRing, key_from_headers
from apikey_operator.client.provider import ApiKeyProvider
from apikey_operator.client.sources import (
    AwsSecretsManagerSource,
    KeySource,
    MountedSecretSource,
    VaultSource,
)

__all__ = [
    "ApiKeyProvider",
    "AwsSecretsManagerSource",
    "KeyRing",
    "KeySource",
    "MountedSecretSource",
    "SourceUnavailable",
    "VaultSource",
    "key_from_headers",
]
