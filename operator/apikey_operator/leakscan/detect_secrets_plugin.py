"""A detect-secrets plugin that reports apikey-operator keys only when their checksum verifies.

Use it with `detect-secrets scan --plugin <path of this file>`, or list it in a
baseline's `plugins_used` as `{name: ApiKeyOperatorDetector, path: file://...}`.
`python -m apikey_operator.leakscan --plugin-path` prints the path.
"""

from __future__ import annotations

from collections.abc import Generator

from detect_secrets.plugins.base import BasePlugin

from apikey_operator.leakscan.detector import find_keys


class ApiKeyOperatorDetector(BasePlugin):
    """Prefixed keys in the apikey-operator format, verified by their CRC32 checksum."""

    # Stored in baselines: changing it would orphan existing baseline entries.
    secret_type = "apikey-operator API Key"

    def analyze_string(self, string: str) -> Generator[str, None, None]:
        """Every verified key in `string`; random strings of the right shape are not reported."""
        for finding in find_keys(string):
            yield finding.key
