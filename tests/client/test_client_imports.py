"""The consumer library imports without kopf, lightkube or the cloud SDKs installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

FORBIDDEN = ("kopf", "lightkube", "hvac", "boto3", "botocore", "requests", "aiohttp")

# Runs in a fresh interpreter in which the forbidden packages cannot be imported at all,
# as in an application image that installed only what the mounted-folder source needs.
PROBE = textwrap.dedent(
    """
    import sys, tempfile

    FORBIDDEN = {forbidden!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"{{name}} is blocked")
            return None

    sys.meta_path.insert(0, Block())
    from apikey_operator.client import (
        ApiKeyProvider, AwsSecretsManagerSource, KeyRing, MountedSecretSource,
        SourceUnavailable, VaultSource, key_from_headers,
    )
    from apikey_operator.testing.kubelet import SecretVolume

    folder = tempfile.mkdtemp()
    SecretVolume(folder).write({{"api-key": "k1", "api-key-previous": "k0"}})
    assert ApiKeyProvider(MountedSecretSource(folder)).get() == "k1"
    ring = KeyRing.from_directory(folder)
    assert ring.verify("k0") and ring.verify("k1") and not ring.verify("k2")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    assert not loaded, loaded
    print("ok")
    """
)


def test_the_library_works_without_kopf_lightkube_or_sdks() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(forbidden=FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
