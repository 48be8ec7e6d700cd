"""The consumer library: for applications that use API keys and services that accept them.

Importable without kopf, aiohttp or the operator's runtime; hvac, boto3 and
azure-keyvault-secrets are only needed by whoever builds the client passed to
VaultSource / AwsSecretsManagerSource / AzureKeyVaultSource (or lets
`ApiKeyProvider.from_reference` build it).
"""

from apikey_operator.client.errors import SourceUnavailable
from apikey_operator.client.keyring import KeyRing, key_from_headers
from apikey_operator.client.provider import ApiKeyProvider
from apikey_operator.client.references import InvalidReference, parse_reference
from apikey_operator.client.sources import (
    AwsSecretsManagerSource,
    AzureKeyVaultSource,
    KeySource,
    KubernetesSecretSource,
    MountedSecretSource,
    VaultSource,
)

__all__ = [
    "ApiKeyProvider",
    "AwsSecretsManagerSource",
    "AzureKeyVaultSource",
    "InvalidReference",
    "KeyRing",
    "KeySource",
    "KubernetesSecretSource",
    "MountedSecretSource",
    "SourceUnavailable",
    "VaultSource",
    "key_from_headers",
    "parse_reference",
]
