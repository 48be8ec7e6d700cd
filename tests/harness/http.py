"""A tiny synchronous HTTP client for asserting on the emulator's raw answers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

APIKEYS = "/apis/apikeys.dev/v1alpha1"


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]


class Http:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json",
                headers: dict[str, str] | None = None) -> Reply:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return Reply(response.status, json.loads(raw) if raw else None,
                             dict(response.headers))
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return Reply(exc.code, json.loads(raw) if raw else None, dict(exc.headers))

    def get(self, path: str, **kwargs: Any) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def put(self, path: str, body: Any, **kwargs: Any) -> Reply:
        return self.request("PUT", path, body, **kwargs)

    def patch(self, path: str, body: Any, *, patch_type: str = "merge", **kwargs: Any) -> Reply:
        content_type = {"merge": "application/merge-patch+json",
                        "json": "application/json-patch+json",
                        "strategic": "application/strategic-merge-patch+json",
                        "apply": "application/apply-patch+yaml"}[patch_type]
        return self.request("PATCH", path, body, content_type=content_type, **kwargs)

    def delete(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("DELETE", path, body, **kwargs)


def apikey(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def secret(name: str, namespace: str = "default", **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace}, **fields}
