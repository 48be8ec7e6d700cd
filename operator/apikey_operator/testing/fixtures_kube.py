"""pytest fixtures for a real Kubernetes control plane; load with ``pytest_plugins``.

``pytest_plugins = ["apikey_operator.testing.fixtures_kube"]`` provides:

- ``control_plane`` (session): the process's shared :class:`ControlPlane` (one per
  pytest-xdist worker), with the CRDs of ``kube_crd_paths`` installed;
- ``kube_crd_paths`` (session): the CRD files or folders to install (override to change;
  default: ``APIKEY_OPERATOR_CRDS`` (``:``-separated) or the project's ``crds/``);
- ``kube_namespace``: a fresh namespace per test, deleted after it;
- ``kubeconfig``: an admin kubeconfig for the control plane, also exported as ``KUBECONFIG``,
  whose default namespace is ``kube_namespace``;
- ``kubectl``: runs kubectl against the control plane and returns the completed process.
"""

from __future__ import annotations

import os
import pathlib
import secrets
import subprocess
from collections.abc import Callable, Iterator

import pytest

from apikey_operator.testing.controlplane import ControlPlane, shared_control_plane
from apikey_operator.testing.kubeconfig import find_kubectl

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


@pytest.fixture(scope="session")
def control_plane(kube_crd_paths: list[pathlib.Path]) -> ControlPlane:
    """The shared control plane, with `kube_crd_paths` applied (idempotent)."""
    plane = shared_control_plane()
    plane.install_crds(kube_crd_paths)
    return plane


@pytest.fixture
def kube_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A namespace of the test's own; deleted (not waited for) afterwards."""
    name = f"test-{secrets.token_hex(4)}"
    control_plane.api.ensure_namespace(name)
    yield name
    control_plane.api.delete_object("v1/namespaces", None, name, missing_ok=True)


@pytest.fixture
def kubeconfig(control_plane: ControlPlane, kube_namespace: str, tmp_path: pathlib.Path,
               monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """An admin kubeconfig whose default namespace is `kube_namespace`; ``KUBECONFIG``
    points at it."""
    path = control_plane.write_kubeconfig(tmp_path / "kubeconfig.yaml",
                                          namespace=kube_namespace)
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def kubectl(kubeconfig: pathlib.Path) -> KubectlFn:
    """``kubectl(*args, input=None, check=True)``: run kubectl against the control plane."""

    def run(*args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [find_kubectl(), f"--kubeconfig={kubeconfig}",
                f"--cache-dir={kubeconfig.parent / '.kube-cache'}", *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=60,
                                check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    return run
