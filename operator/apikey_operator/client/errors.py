"""The one error the consumer library raises when it cannot produce a key."""

from __future__ import annotations


class SourceUnavailable(Exception):
    """A key source could not produce a key: the store is down, sealed, throttling,
    refuses access, or the entry or file is missing or malformed.

    Messages name the source and the reason, never key material.
    """
