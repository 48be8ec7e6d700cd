"""Test harness for apikey-operator and its users' own tests (like `kopf.testing` and envtest).

Needs the `testing` extra. The operator itself never imports this package, and the operator
image does not carry it.

- `ControlPlane`: etcd + kube-apiserver + kube-controller-manager on loopback, CRDs installed;
- `ApiProxy`: a request-counting, fault-injecting HTTPS proxy in front of it;
- `KubeApi`: a small synchronous admin client for test code;
- `apikey_operator.testing.harness.LocalCluster`: the control plane + the running operator;
- `apikey_operator.testing.fixtures_kube`: pytest fixtures (a namespace per test, kubectl);
- `apikey_operator.testing.servers`: OpenBao and moto launchers, a TCP outage proxy;
- `apikey_operator.testing.vendor`: a fake key vendor for the webhook generator.
"""

from __future__ import annotations

import importlib
from typing import Any

# Imported on first use, so that a test importing only, say, the kubelet volume writer does not
# need aiohttp or urllib3 installed.
_EXPORTS = {
    "ApiProxy": "apikey_operator.testing.apiproxy",
    "ControlPlane": "apikey_operator.testing.controlplane",
    "reset_cluster": "apikey_operator.testing.controlplane",
    "shared_control_plane": "apikey_operator.testing.controlplane",
    "KubeApi": "apikey_operator.testing.kubeapi",
    "KubernetesApiError": "apikey_operator.testing.kubeapi",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
