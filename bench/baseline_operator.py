"""The floor: a minimal kopf operator doing the least an ApiKey operator must do.

For each ApiKey-shaped object it creates one Secret (owned by the object) holding a
random key and sets the object's status to ``Ready=True`` with the generation it saw,
through kopf's own patch (together with kopf's bookkeeping); nothing else: no store, no
events of its own, no rotation, no deletion handling. kopf's defaults are kept; the
Secret is created with the operator's own client (`apikey_operator.kube`, raw aiohttp), so
its cost is in the floor.

Run as ``python -m bench.baseline_operator`` with ``KUBECONFIG`` set; it serves every
namespace until SIGTERM.
"""

from __future__ import annotations

import logging
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

import kopf

from apikey_operator.kube import KubeClient, KubeError

GROUP, VERSION = "apikeys.dev", "v1alpha1"
_client: KubeClient | None = None


def _api() -> KubeClient:
    global _client
    if _client is None:
        _client = KubeClient()
    return _client


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.peering.standalone = True


@kopf.on.cleanup()
async def close(**_: Any) -> None:
    if _client is not None:
        await _client.close()


@kopf.on.create(GROUP, VERSION, "apikeys")  # type: ignore[arg-type]
async def provision(meta: kopf.Meta, namespace: str, name: str, patch: kopf.Patch,
                    **_: Any) -> None:
    owner = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ApiKey", "name": name,
             "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}
    secret = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "ownerReferences": [owner],
                     "labels": {"app.kubernetes.io/managed-by": "apikey-baseline"}},
        "stringData": {"api-key": secrets.token_urlsafe(32)},
    }
    try:
        await _api().create_secret(secret)
    except KubeError as exc:
        # Idempotent like any real operator: a retried handler finds its own Secret.
        if exc.status != 409:
            raise
    generation = meta.get("generation")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # kopf writes the status with its own bookkeeping: the least a kopf operator can do.
    patch.status["observedGeneration"] = generation
    patch.status["conditions"] = [
        {"type": "Ready", "status": "True", "reason": "Provisioned", "message": "",
         "lastTransitionTime": now, "observedGeneration": generation}]


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    kopf.run(standalone=True, clusterwide=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
