"""The harness tests use the emulator fixtures directly (the top-level conftest may load them
as a plugin as well; these imports are the same objects)."""

from __future__ import annotations

import pytest

from apikey_operator.testing.fixtures_kube import (  # noqa: F401
    kube_api,
    kube_crd_paths,
    kubeconfig,
    kubectl,
)
from apikey_operator.testing.kube_runner import EmulatorRunner
from tests.harness.http import Http


@pytest.fixture
def http(kube_api: EmulatorRunner) -> Http:  # noqa: F811
    """Raw HTTP access to the emulator, for checking exactly what a client would see."""
    return Http(kube_api.url)
