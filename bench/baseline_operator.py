"""The floor: a minimal kopf operator doing the least an ApiKey operator must do.

For each ApiKey-shaped object it creates one Secret (owned by the object) holding a
random key and patches the object's status to ``Ready=True`` with the generation it
saw; nothing else: no store, no events of its own, no rotation, no deletion handling.
kopf's defaults are kept (its own bookkeeping is part of the floor); the Kubernetes
client is lightkube, as in the operator, so that the client's cost is in the floor too.

Run as ``python -m bench.baseline_operator`` with ``KUBECONFIG`` set; it serves every
namespace until SIGTERM.
"""

from __future__ import annotations

import logging
import secrets
import sys
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from lightkube import AsyncClient
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Secret
from lightkube.types import PatchType

GROUP, VERSION = "apikeys.dev", "v1alpha1"
ApiKey = create_namespaced_resource(GROUP, VERSION, "ApiKey", "apikeys")
_client: AsyncClient | None = None


def _api() -> AsyncClient:
    global _client
    if _client is None:
        _client = AsyncClient(field_manager="apikey-baseline")
    return _client


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.peering.standalone = True


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if _client is not None:
        await _client.close()


@kopf.on.create(GROUP, VERSION, "apikeys")  # type: ignore[arg-type]
async def provision(body: kopf.Body, meta: kopf.Meta, namespace: str, name: str,
                    **_: Any) -> None:
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApiKey", "name": name,
             "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}
    secret = cast(Secret, Secret.from_dict({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": [owner],
                     "labels": {"app.kubernetes.io/managed-by": "apikey-baseline"}},
        "stringData": {"api-key": secrets.token_urlsafe(32)},
    }))
    await _api().create(secret)
    generation = meta.get("generation")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"observedGeneration": generation, "conditions": [
        {"type": "Ready", "status": "True", "reason": "Provisioned", "message": "",
         "lastTransitionTime": now, "observedGeneration": generation}]}
    await _api().patch(ApiKey.Status, name=name, namespace=namespace, obj={"status": status},
                       patch_type=PatchType.MERGE)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    kopf.run(standalone=True, clusterwide=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
