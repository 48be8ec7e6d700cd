"""Helm's real engine for the chart tests: helm-sdkpy in a Python 3.12 venv.

The venv lives in the user's cache (`$XDG_CACHE_HOME/apikey-operator/helm-venv`, or
`$APIKEY_HELM_VENV`), outside the repository, and is created once on first use from a
python3.12 found on PATH or via pyenv (`$APIKEY_HELM_PYTHON` overrides).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "apikey-operator"
RENDER = Path(__file__).resolve().parent / "render.py"
HELM_SDKPY = "helm-sdkpy==0.1.32"

Render = Callable[[dict[str, Any]], dict[str, Any]]


class RenderError(Exception):
    """Helm refused to render (bad values, template error); the message is Helm's."""


def _python312() -> str | None:
    """A Python 3.12 that really runs (a pyenv shim may exist yet refuse to run)."""
    candidates: list[str] = []
    explicit = os.environ.get("APIKEY_HELM_PYTHON")
    if explicit:
        candidates.append(explicit)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += [str(p) for p in sorted(pyenv_root.glob("versions/3.12*/bin/python3.12"))]
    found = shutil.which("python3.12")
    if found:
        candidates.append(found)
    for candidate in candidates:
        probe = subprocess.run([candidate, "-c", "import venv"], capture_output=True,
                               check=False, timeout=60)
        if probe.returncode == 0:
            return candidate
    return None


def _venv_dir() -> Path:
    explicit = os.environ.get("APIKEY_HELM_VENV")
    if explicit:
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "apikey-operator" / "helm-venv"


def ensure_helm_python() -> str:
    """The venv's interpreter with helm_sdkpy importable, built on first use."""
    venv = _venv_dir()
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import helm_sdkpy"]
    if python.exists() and subprocess.run(probe, capture_output=True, check=False).returncode == 0:
        return str(python)
    base = _python312()
    if base is None:
        pytest.skip("helm-sdkpy needs Python 3.12 and no python3.12 was found (PATH, pyenv)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the final place and rename, so a half-built venv is never used.
    staging = Path(tempfile.mkdtemp(prefix="helm-venv-", dir=venv.parent))
    subprocess.run([base, "-m", "venv", str(staging)], check=True, timeout=120)
    subprocess.run(
        [str(staging / "bin" / "python"), "-m", "pip", "install", "-q", HELM_SDKPY],
        check=True,
        timeout=300,
    )
    shutil.rmtree(venv, ignore_errors=True)
    staging.rename(venv)
    # venv scripts hold absolute paths; the interpreter itself is a symlink and moves fine.
    return str(python)


def render_chart(python: str, values: dict[str, Any], namespace: str = "apikey-operator") -> Any:
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as handle:
        json.dump(values, handle)
        handle.flush()
        result = subprocess.run(
            [python, str(RENDER), str(CHART), "--values", handle.name, "--namespace", namespace],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    try:
        output = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"render.py failed: {result.stderr[-2000:]}") from None
    if "error" in output:
        raise RenderError(output["error"])
    return output


def lint_chart(python: str, chart: Path = CHART) -> Any:
    """Helm's own lint report for a chart folder."""
    result = subprocess.run(
        [python, str(RENDER), str(chart), "--lint"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"render.py --lint failed: {result.stderr[-2000:]}") from None


if __name__ == "__main__":
    # `make helm-engine`: build the venv once before parallel test workers need it.
    if _python312() is None:
        print("helm engine: no python3.12 found; the chart tests will skip with that reason")
    else:
        print(f"helm engine: {ensure_helm_python()}")
