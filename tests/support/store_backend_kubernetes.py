"""The built-in Kubernetes store as a contract-suite backend, on the real control plane.

The store talks to kube-apiserver through a `TcpProxy`, so the suite's outage cases
(refused connections, hung server) apply to it like to OpenBao and moto.
"""

from __future__ import annotations

import base64
import json
import pathlib
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from apikey_operator.kube import client_for, load_target
from apikey_operator.stores import Store
from apikey_operator.stores.base import KeyRef
from apikey_operator.stores.kubernetes import (
    OWNER_ANNOTATION,
    STATE_ANNOTATION,
    KubernetesStore,
    store_secret_name,
)
from apikey_operator.testing.controlplane import ControlPlane, reset_cluster, shared_control_plane
from apikey_operator.testing.harness import OPERATOR_NAMESPACE, SECRETS
from apikey_operator.testing.kubeapi import KubeApi
from apikey_operator.testing.servers import TcpProxy

TEST_TIMEOUT_SECONDS = 2.0


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, plane: ControlPlane, proxy: TcpProxy, workdir: pathlib.Path) -> None:
        self.runner: KubeApi = plane.api
        self.proxy: TcpProxy | None = proxy
        self.kubeconfig = plane.write_kubeconfig(workdir / "kubeconfig",
                                                 server=f"https://127.0.0.1:{proxy.port}")
        self._stores: list[Store] = []

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {"type": "kubernetes", **overrides}

    def make_store(self, **overrides: Any) -> Store:
        client = client_for(load_target(str(self.kubeconfig)), timeout=TEST_TIMEOUT_SECONDS)
        store = KubernetesStore(self.name, OPERATOR_NAMESPACE, client)
        self._stores.append(store)
        return store

    def plant_foreign(self, ref: KeyRef, owner_uid: str | None) -> None:
        metadata: dict[str, Any] = {
            "name": store_secret_name(ref.namespace, ref.name),
            "namespace": OPERATOR_NAMESPACE,
        }
        if owner_uid is not None:
            metadata["labels"] = {"app.kubernetes.io/managed-by": "apikey-operator"}
            metadata["annotations"] = {
                OWNER_ANNOTATION: owner_uid,
                STATE_ANNOTATION: json.dumps({"current": 1}),
            }
        self.runner.create_object(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": metadata,
                "data": {"v1": base64.b64encode(b"foreign-value").decode()},
            }
        )

    def snapshot(self, ref: KeyRef) -> Any:
        obj = self.runner.get_object(
            SECRETS, OPERATOR_NAMESPACE, store_secret_name(ref.namespace, ref.name)
        )
        if obj is None:
            return None
        meta = obj["metadata"]
        return {
            "data": obj.get("data"),
            "labels": meta.get("labels"),
            "annotations": meta.get("annotations"),
            "rv": meta.get("resourceVersion"),
        }

    async def aclose(self) -> None:
        stores, self._stores = self._stores, []
        for store in stores:
            await store.close()


@pytest_asyncio.fixture
async def store_backend_kubernetes() -> AsyncIterator[KubernetesBackend]:
    """The built-in store against the real control plane (reset) behind an outage proxy."""
    plane = shared_control_plane()
    reset_cluster(plane.api, (OPERATOR_NAMESPACE, "default"))
    port = int(plane.url.rsplit(":", 1)[1])
    with (
        tempfile.TemporaryDirectory(prefix="kube-store-") as tmp,
        TcpProxy(port) as proxy,
    ):
        backend = KubernetesBackend(plane, proxy, pathlib.Path(tmp))
        try:
            yield backend
        finally:
            await backend.aclose()
