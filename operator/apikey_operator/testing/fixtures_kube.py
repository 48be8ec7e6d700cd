"""pytest fixtures for the emulated Kubernetes API; load with ``pytest_plugins``.

``pytest_plugins = ["apikey_operator.testing.fixtures_kube"]`` provides:

- ``kube_crd_paths``: the CRD files installed into every emulator (override to change);
- ``kube_api``: a started :class:`EmulatorRunner` per test, with the CRDs and the
  ``default`` and ``apikey-operator`` namespaces;
- ``kubeconfig``: a kubeconfig file for ``kube_api``, also exported as ``KUBECONFIG``;
- ``kubectl``: runs kubectl against ``kube_api`` and returns the completed process.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from collections.abc import Callable, Iterator

import pytest

from apikey_operator.testing.kube_runner import EmulatorRunner
from apikey_operator.testing.kubeconfig import kubectl_argv

OPERATOR_NAMESPACE = "apikey-operator"
KubectlFn = Callable[..., "subprocess.CompletedProcess[str]"]


def default_crd_paths() -> list[pathlib.Path]:
    """The project's ``crds/`` folder (or ``APIKEY_OPERATOR_CRDS``, ``:``-separated)."""
    configured = os.environ.get("APIKEY_OPERATOR_CRDS")
    if configured:
        return [pathlib.Path(p) for p in configured.split(os.pathsep) if p]
    # operator/apikey_operator/testing/fixtures_kube.py -> the repository root
    return [pathlib.Path(__file__).resolve().parents[3] / "crds"]


@pytest.fixture(scope="session")
def kube_crd_paths() -> list[pathlib.Path]:
    """CRD YAML files or folders to install; absent paths are skipped."""
    return [p for p in default_crd_paths() if p.exists()]


@pytest.fixture
def kube_api(kube_crd_paths: list[pathlib.Path]) -> Iterator[EmulatorRunner]:
    """A fresh emulated API server on a free loopback port, stopped after the test."""
    with EmulatorRunner(crd_paths=kube_crd_paths,
                        namespaces=("default", OPERATOR_NAMESPACE)) as runner:
        yield runner


@pytest.fixture
def kubeconfig(kube_api: EmulatorRunner, tmp_path: pathlib.Path,
               monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """A kubeconfig for ``kube_api`` (plain HTTP, no auth); ``KUBECONFIG`` points at it."""
    path = kube_api.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def kubectl(kube_api: EmulatorRunner, kubeconfig: pathlib.Path) -> KubectlFn:
    """``kubectl(*args, input=None, check=True)``: run kubectl against ``kube_api``."""

    def run(*args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = kubectl_argv(kubeconfig, kube_api.url, *args)
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=60,
                                check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    return run
