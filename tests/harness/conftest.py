"""The harness fixtures: the shared control plane, a namespace per test, kubectl."""

from apikey_operator.testing.fixtures_kube import (  # noqa: F401 (fixtures)
    control_plane,
    kube_crd_paths,
    kube_namespace,
    kubeconfig,
    kubectl,
)
