"""A detect-secrets plugin that reports apikey-operator keys only when their checksum verifies.

Use it with `detect-secrets scan --plugin <path of this file>`, or list it in a
baseline's `plugins_used` as `{name: ApiKeyOperatorDetector, path: file://...}`.
`python -m apikey_operator.leakscan --plugin-path` prints the path.
"""

from __future__ import annotations

import re
from collections.abc import Generator

from detect_secrets.plugins.base import RegexBasedDetector

from apikey_operator.leakscan.detector import KEY_CHARS_CLASS, MIN_KEY_LENGTH, find_keys


class ApiKeyOperatorDetector(RegexBasedDetector):
    """Prefixed keys in the apikey-operator format, verified by their CRC32 checksum.

    A RegexBasedDetector rather than a bare BasePlugin: detect-secrets then skips its
    "likely an id" heuristic (meant for entropy plugins), which would drop a verified
    key on a line such as `client_id: <key>`.
    """

    # Stored in baselines: changing it would orphan existing baseline entries.
    secret_type = "apikey-operator API Key"

    # The candidate runs; only what `find_keys` verifies inside them is reported.
    denylist = (re.compile(KEY_CHARS_CLASS + f"{{{MIN_KEY_LENGTH},}}", re.ASCII),)

    def analyze_string(self, string: str) -> Generator[str, None, None]:
        """Every verified key in `string`, as written there (a base64 token for an encoded one).

        Random strings of the right shape are not reported. The text as written is what
        detect-secrets expects: it hashes it into baselines and looks it up in the line.
        """
        for finding in find_keys(string):
            yield string[finding.start : finding.end]
