"""Test-only crash points for crash-consistency tests.

When the environment variable APIKEY_OPERATOR_CRASH_AT names a point (e.g.
`after-promote`), the process kills itself with SIGKILL the first time it
reaches that point, exactly as a node failure would. The variable is read once
at import; without it `reached` is a no-op that costs one comparison.
"""

from __future__ import annotations

import os
import signal

POINTS = ("after-create", "after-project", "after-promote", "after-expire-secret",
          "after-revoke", "after-restore", "after-retire-store")
_TARGET = os.environ.get("APIKEY_OPERATOR_CRASH_AT") or None


def reached(point: str) -> None:
    if _TARGET is not None and point == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
