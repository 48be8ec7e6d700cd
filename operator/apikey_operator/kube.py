"""The only module besides kopf that talks to the Kubernetes API.

Thin async wrappers over lightkube, returning plain dicts, and one error
mapping: conflicts, throttling and server errors become `KubeTransient` (the
caller backs off and re-plans), anything else stays a `KubeError`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx2 as httpx
from lightkube import ALL_NS, AsyncClient, KubeConfig, operators
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.exceptions import ApiError, ConfigError
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.core_v1 import Event, Namespace, Secret
from lightkube.types import PatchType

from apikey_operator.spec import GROUP, VERSION

FIELD_MANAGER = "apikey-operator"
T = TypeVar("T")

ApiKeyResource = create_namespaced_resource(GROUP, VERSION, "ApiKey", "apikeys")
RotationPolicyResource = create_global_resource(GROUP, VERSION, "RotationPolicy",
                                                "rotationpolicies")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_WORKLOADS = {"Deployment": Deployment, "StatefulSet": StatefulSet, "DaemonSet": DaemonSet}


class KubeError(Exception):
    """A Kubernetes API call failed for a reason retries will not fix."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class KubeStale(KubeError):
    """A write conditional on a resourceVersion found the object changed since."""


class KubeTransient(KubeError):
    """Conflict (409), throttling (429), server errors (5xx) or a broken connection."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


def _map_error(exc: Exception, what: str) -> KubeError:
    if isinstance(exc, ApiError):
        status = exc.status.code or 0
        reason = exc.status.reason or ""
        if status in (409, 429) or status >= 500:
            retry_after = None
            details = exc.status.details
            if details is not None and details.retryAfterSeconds:
                retry_after = float(details.retryAfterSeconds)
            return KubeTransient(f"{what}: {status} {reason}", status, retry_after)
        if status == 403 and exc.status.message:
            # The server's own words name the verb, resource and identity that were refused.
            return KubeError(f"{what}: {status} {reason}: {exc.status.message}", status)
        return KubeError(f"{what}: {status} {reason}", status)
    return KubeTransient(f"{what}: {type(exc).__name__}")


def decode_data(data: Mapping[str, str] | None) -> dict[str, str]:
    """A Secret's base64 data as text; undecodable entries are kept as '' (never raised)."""
    result: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            result[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, TypeError):
            result[key] = ""
    return result


def encode_data(data: Mapping[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode("utf-8")).decode("ascii") for k, v in data.items()}


class KubeClient:
    """One shared connection pool to the API server for the operator's own calls."""

    def __init__(self, client: AsyncClient | None = None) -> None:
        self._client = client

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            # In-cluster service account, else KUBECONFIG / ~/.kube/config, like kopf.
            self._client = AsyncClient(field_manager=FIELD_MANAGER, timeout=httpx.Timeout(15.0))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _call(self, what: str, call: Awaitable[T], *, missing_ok: bool = False) -> T | None:
        """Await an API call with the one error mapping; None for a 404 when `missing_ok`."""
        try:
            return await call
        except ApiError as exc:
            if missing_ok and exc.status.code == 404:
                return None
            raise _map_error(exc, what) from None
        except httpx.HTTPError as exc:
            raise _map_error(exc, what) from None

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = await self._call(f"reading Secret {namespace}/{name}",
                               self.client.get(Secret, name=name, namespace=namespace),
                               missing_ok=True)
        return None if obj is None else _as_dict(obj)

    async def create_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body["metadata"]
        return _as_dict(await self._call(
            f"creating Secret {meta['namespace']}/{meta['name']}",
            self.client.create(cast(Secret, Secret.from_dict(dict(body))))))

    async def replace_secret(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with the body's resourceVersion: a concurrent change gives KubeTransient (409)."""
        meta = body["metadata"]
        return _as_dict(await self._call(
            f"updating Secret {meta['namespace']}/{meta['name']}",
            self.client.replace(cast(Secret, Secret.from_dict(dict(body))))))

    async def watch_secrets(self, namespace: str | None, equal: Mapping[str, str],
                            absent: tuple[str, ...] = (),
                            ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(event type, Secret) for every Secret whose labels are `equal` and lack `absent`
        (a server-side label selector: the API server never sends us anyone else's
        Secrets, whatever their number or size), forever: every
        existing one first, then each change. A broken stream is re-opened after a pause,
        starting over with the existing ones (a stale entry it leaves is harmless: writes
        are conditional on resourceVersion)."""
        pause = 1.0
        while True:
            try:
                selector: dict[str, Any] = dict(equal)
                selector.update({label: operators.not_exists() for label in absent})
                # lightkube reads no namespace as the kubeconfig's default one, not all.
                async for event, obj in self.client.watch(Secret, namespace=namespace or ALL_NS,
                                                          labels=selector, server_timeout=300):
                    pause = 1.0
                    yield event, _as_dict(obj)
            except (ApiError, httpx.HTTPError) as exc:
                logging.getLogger(__name__).warning(
                    "watching Secrets%s: %s; again in %.0fs",
                    f" in {namespace}" if namespace else "", _map_error(exc, "watch"), pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def delete_secret(self, namespace: str, name: str) -> None:
        await self._call(f"deleting Secret {namespace}/{name}",
                         self.client.delete(Secret, name=name, namespace=namespace),
                         missing_ok=True)

    async def patch_apikey_status(self, namespace: str, name: str, status: Mapping[str, Any],
                                  *, uid: str, has_status: bool,
                                  resource_version: str | None = None) -> str:
        """Set the given status fields (None removes one) on the ApiKey with this uid only
        (and, with `resource_version`, only if the object is still at that version: KubeStale
        otherwise).

        A JSON patch whose first operation tests ``metadata.uid``: an ApiKey deleted and created
        again under the same name is another object, and a late write meant for the old one must
        fail (422) rather than land on it. A merge patch cannot carry that precondition (the
        status subresource ignores metadata). `has_status` says whether the object already has
        a status to add fields to. Returns the resourceVersion the write made.
        """
        ops = status_patch(status, uid, has_status)
        if resource_version:
            ops.insert(1, {"op": "test", "path": "/metadata/resourceVersion",
                           "value": resource_version})
        what = f"updating status of ApiKey {namespace}/{name}"
        try:
            obj = await self.client.patch(ApiKeyResource.Status, name=name, namespace=namespace,
                                          obj=ops, patch_type=PatchType.JSON)
        except ApiError as exc:
            if exc.status.code == 422 and resource_version:
                # A failed JSON-patch test names neither test: look whether the object is
                # still ours (then it only moved on) or another one (then ours is gone).
                current = await self.get_apikey(namespace, name)
                meta = (current or {}).get("metadata") or {}
                if meta.get("uid") == uid and meta.get("resourceVersion") != resource_version:
                    raise KubeStale(f"{what}: the object changed meanwhile", 422) from None
            raise _map_error(exc, what) from None
        except httpx.HTTPError as exc:
            raise _map_error(exc, what) from None
        return str(_as_dict(obj).get("metadata", {}).get("resourceVersion", "")) if obj else ""

    async def patch_policy_status(self, name: str, status: Mapping[str, Any], *, uid: str,
                                  has_status: bool) -> None:
        """Set the given status fields on the RotationPolicy with this uid only (as for an
        ApiKey: a policy created again under the same name is another object)."""
        await self._call(f"updating status of RotationPolicy {name}",
                         self.client.patch(RotationPolicyResource.Status, name=name,
                                           obj=status_patch(status, uid, has_status),
                                           patch_type=PatchType.JSON))

    async def patch_apikey_annotations(self, namespace: str, name: str,
                                       annotations: Mapping[str, str | None]) -> None:
        await self._call(f"annotating ApiKey {namespace}/{name}",
                         self.client.patch(ApiKeyResource, name=name, namespace=namespace,
                                           obj={"metadata": {"annotations": dict(annotations)}},
                                           patch_type=PatchType.MERGE))

    async def get_apikey(self, namespace: str, name: str) -> dict[str, Any] | None:
        obj = await self._call(f"reading ApiKey {namespace}/{name}",
                               self.client.get(ApiKeyResource, name=name, namespace=namespace),
                               missing_ok=True)
        return None if obj is None else _as_dict(obj)

    async def list_apikeys(self, namespace: str | None = None,
                           selector: str | None = None) -> list[dict[str, Any]]:
        """Every ApiKey (in `namespace`, or all), optionally matching a kubectl label selector."""
        return await self._list(ApiKeyResource, "listing ApiKeys", namespace=namespace or "*",
                                selector=selector)

    async def _list(self, resource: Any, what: str, *, namespace: str | None = None,
                    selector: str | None = None,
                    fields: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        # lightkube builds selectors from pairs; an `exists` operator encodes as its bare key,
        # which passes a kubectl-style selector string through to the server unchanged.
        labels = {selector: operators.exists()} if selector else None
        kwargs: dict[str, Any] = {"labels": labels, "fields": dict(fields) if fields else None}
        if namespace is not None:
            kwargs["namespace"] = namespace
        try:
            return [_as_dict(obj) async for obj in self.client.list(resource, **kwargs)]
        except (ApiError, httpx.HTTPError) as exc:
            raise _map_error(exc, what) from None

    async def get_rotationpolicy(self, name: str) -> dict[str, Any] | None:
        obj = await self._call(f"reading RotationPolicy {name}",
                               self.client.get(RotationPolicyResource, name=name),
                               missing_ok=True)
        return None if obj is None else _as_dict(obj)

    async def list_rotationpolicies(self) -> list[dict[str, Any]]:
        return await self._list(RotationPolicyResource, "listing RotationPolicies")

    async def get_namespace(self, name: str) -> dict[str, Any] | None:
        obj = await self._call(f"reading Namespace {name}",
                               self.client.get(Namespace, name=name), missing_ok=True)
        return None if obj is None else _as_dict(obj)

    async def list_secrets(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return await self._list(Secret, "listing Secrets", namespace=namespace or "*")

    async def list_events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """The core/v1 Events whose involvedObject is this object, oldest first."""
        events = await self._list(Event, f"listing Events of {kind} {namespace}/{name}",
                                  namespace=namespace,
                                  fields={"involvedObject.kind": kind,
                                          "involvedObject.name": name})
        return sorted(events, key=event_time)

    async def restart_workload(self, kind: str, namespace: str, name: str,
                               annotations: Mapping[str, str]) -> bool:
        """Set pod-template annotations (like `kubectl rollout restart`); False if absent.

        Setting a value the template already has changes nothing, so repeating
        the call for the same rotation never restarts the workload twice.
        """
        resource: Any = _WORKLOADS[kind]
        patch = {"spec": {"template": {"metadata": {"annotations": dict(annotations)}}}}
        patched = await self._call(
            f"restarting {kind} {namespace}/{name}",
            self.client.patch(resource, name=name, namespace=namespace, obj=patch,
                              patch_type=PatchType.MERGE),
            missing_ok=True)
        return patched is not None


def status_patch(status: Mapping[str, Any], uid: str, has_status: bool) -> list[dict[str, Any]]:
    """JSON-patch operations for `status_patch`'s contract (see patch_apikey_status)."""
    ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
    if not has_status:
        return [*ops, {"op": "add", "path": "/status",
                       "value": {k: v for k, v in status.items() if v is not None}}]
    for key, value in status.items():
        path = "/status/" + key.replace("~", "~0").replace("/", "~1")
        if value is None:
            # `remove` fails on an absent member; adding first makes removal unconditional.
            ops += [{"op": "add", "path": path, "value": 0}, {"op": "remove", "path": path}]
        else:
            ops.append({"op": "add", "path": path, "value": value})
    return ops


def _as_dict(obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], obj.to_dict())


def secret_body(
    namespace: str,
    name: str,
    data: Mapping[str, str],
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    owner: Mapping[str, Any] | None,
    existing: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The full Secret to create or PUT: ours where we manage it, the rest kept from `existing`."""
    body: dict[str, Any] = copy.deepcopy(dict(existing)) if existing else {}
    body["apiVersion"] = "v1"
    body["kind"] = "Secret"
    meta = body.setdefault("metadata", {})
    meta["name"] = name
    meta["namespace"] = namespace
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    if owner is not None:
        meta["ownerReferences"] = [dict(owner)]
    body["type"] = body.get("type") or "Opaque"
    body["data"] = encode_data(data)
    body.pop("stringData", None)
    return body


def event_time(event: Mapping[str, Any]) -> str:
    """An Event's latest time as RFC 3339 text (lastTimestamp, eventTime, or creation)."""
    meta = event.get("metadata") or {}
    return str(event.get("lastTimestamp") or event.get("eventTime")
               or meta.get("creationTimestamp") or "")


class KubeConfigError(KubeError):
    """No usable client configuration: the message names the file or the missing context."""


@dataclass(frozen=True)
class ClientTarget:
    """Where a command-line client connects: the chosen context of a kubeconfig, or the
    in-cluster service account."""

    config: SingleConfig
    source: str  # the kubeconfig path, or "in-cluster"

    @property
    def server(self) -> str:
        return str(self.config.cluster.server)

    @property
    def namespace(self) -> str:
        return self.config.namespace

    @property
    def context(self) -> str:
        return self.config.context_name


def load_target(kubeconfig: str | None = None, context: str | None = None) -> ClientTarget:
    """Resolve the configuration like kubectl: `kubeconfig`, else $KUBECONFIG (its first
    existing entry), else in-cluster, else ~/.kube/config; raise KubeConfigError naming what
    is missing."""
    path: str | None = kubeconfig
    if path is None:
        entries = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        if entries:
            path = next((p for p in entries if Path(p).expanduser().is_file()), entries[0])
        elif os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
            try:
                account = KubeConfig.from_service_account(SERVICE_ACCOUNT_DIR)
                return ClientTarget(cast(SingleConfig, account.get()), "in-cluster")
            except (ConfigError, OSError, KeyError):
                pass
        if path is None:
            path = str(Path("~/.kube/config").expanduser())
            if not Path(path).is_file():
                raise KubeConfigError(
                    f"no kubeconfig: {path} does not exist, KUBECONFIG is not set and this is "
                    "not a pod (pass --kubeconfig)")
    expanded = Path(path).expanduser()
    if not expanded.is_file():
        raise KubeConfigError(f"kubeconfig {path} does not exist")
    try:
        config = KubeConfig.from_file(expanded)
        if context is not None and context not in config.contexts:
            raise KubeConfigError(f"context {context!r} not found in kubeconfig {path}")
        chosen = config.get(context)
    except KubeConfigError:
        raise
    except (ConfigError, KeyError, TypeError, AttributeError, OSError, ValueError) as exc:
        detail = f": {exc}" if isinstance(exc, ConfigError) else f" ({type(exc).__name__})"
        raise KubeConfigError(f"kubeconfig {path} is not usable{detail}") from None
    except Exception as exc:  # yaml.YAMLError and anything the parser raises
        raise KubeConfigError(f"kubeconfig {path} is not valid YAML ({type(exc).__name__})"
                              ) from None
    if chosen is None:
        raise KubeConfigError(f"kubeconfig {path} has no current context (pass --context)")
    return ClientTarget(chosen, str(path))


def client_for(target: ClientTarget, timeout: float = 15.0) -> KubeClient:
    """A KubeClient connected to `target`."""
    return KubeClient(AsyncClient(config=target.config, field_manager=FIELD_MANAGER,
                                  timeout=httpx.Timeout(timeout)))
