"""Leak detection for prefixed API keys: a pure detector, a file scanner, a detect-secrets plugin.

The detect-secrets plugin lives in `detect_secrets_plugin` and is imported only
by detect-secrets itself, so the operator never needs detect-secrets installed.
"""

from apikey_operator.leakscan.detector import Finding, find_keys, is_key

__all__ = ["Finding", "find_keys", "is_key"]
