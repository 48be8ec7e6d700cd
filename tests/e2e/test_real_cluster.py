"""The operator in a real cluster: the image, the chart, the examples and each store.

Needs Docker, kind and helm; skipped elsewhere (see e2e_cluster.unavailable_reason).
Run: APIKEY_E2E=1 pytest -m e2e tests/e2e
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import pytest
from e2e_cluster import (
    OPENBAO_NAMESPACE,
    OPENBAO_TOKEN,
    OPERATOR_NAMESPACE,
    ROOT,
    ThrowawayCluster,
    unavailable_reason,
    wait_for,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
    pytest.mark.timeout(1800),
]

NAMESPACE = "payments"  # from examples/00-namespace.yaml
E2E_NAMESPACE = "apikeys-e2e"
SERVICE_ACCOUNT = f"system:serviceaccount:{OPERATOR_NAMESPACE}:apikey-operator"


def fingerprint(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def secret_data(cluster: ThrowawayCluster, namespace: str, name: str) -> dict[str, str]:
    secret = cluster.get("secret", "-n", namespace, name)
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def apikey(cluster: ThrowawayCluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get("apikey", "-n", namespace, name)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in obj.get("status", {}).get("conditions", []):
        if cond["type"] == kind:
            return dict(cond)
    return {}


def wait_ready(cluster: ThrowawayCluster, namespace: str, name: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = apikey(cluster, namespace, name)
        status = obj.get("status", {})
        current = status.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if condition(obj, "Ready").get("status") == "True" and current else None

    result: dict[str, Any] = wait_for(f"ApiKey {namespace}/{name} Ready", ready)
    return result


def wait_version(
    cluster: ThrowawayCluster, namespace: str, name: str, version: int
) -> dict[str, Any]:
    def rotated() -> dict[str, Any] | None:
        obj = apikey(cluster, namespace, name)
        current = obj.get("status", {}).get("currentKey", {}).get("version")
        return obj if current == version else None

    result: dict[str, Any] = wait_for(f"{namespace}/{name} at version {version}", rotated)
    return result


def bao(cluster: ThrowawayCluster, *args: str, check: bool = True) -> str:
    return cluster.kubectl(
        "-n",
        OPENBAO_NAMESPACE,
        "exec",
        "deploy/openbao",
        "--",
        "env",
        f"BAO_TOKEN={OPENBAO_TOKEN}",
        "BAO_ADDR=http://127.0.0.1:8200",
        "bao",
        *args,
        check=check,
    )


@pytest.fixture(scope="module")
def examples(operator: ThrowawayCluster) -> ThrowawayCluster:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        operator.kubectl("apply", "-f", str(path))
    operator.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": E2E_NAMESPACE}},
            {
                "apiVersion": "apikeys.dev/v1alpha1",
                "kind": "RotationPolicy",
                "metadata": {"name": "e2e-fast"},
                "spec": {"rotateEvery": "60s", "gracePeriod": "15s"},
            },
        ]
    )
    return operator


def test_the_examples_are_provisioned(examples: ThrowawayCluster) -> None:
    obj = wait_ready(examples, NAMESPACE, "billing-client")
    data = secret_data(examples, NAMESPACE, "billing-client-key")
    key = data["api-key"]
    assert re.fullmatch(r"bill_[0-9A-Za-z]{43}[0-9A-Za-z]{6}", key)
    assert "api-key-previous" not in data
    assert obj["status"]["currentKey"]["fingerprint"] == fingerprint(key)
    assert key not in str(obj)
    secret = examples.get("secret", "-n", NAMESPACE, "billing-client-key")
    owner = secret["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ApiKey", "billing-client", True)
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "apikey-operator"
    events = examples.get(
        "events", "-n", NAMESPACE, "--field-selector=involvedObject.name=billing-client"
    )
    assert "Provisioned" in {e["reason"] for e in events["items"]}
    table = examples.kubectl("get", "ak", "-A")
    assert "billing-client" in table and "True" in table


def test_rotation_keeps_the_old_key_for_its_grace(examples: ThrowawayCluster) -> None:
    before = wait_ready(examples, NAMESPACE, "billing-client")
    old_key = secret_data(examples, NAMESPACE, "billing-client-key")["api-key"]
    version = before["status"]["currentKey"]["version"]
    examples.kubectl(
        "annotate",
        "apikey",
        "-n",
        NAMESPACE,
        "billing-client",
        "apikeys.dev/rotate=e2e-1",
        "--overwrite",
    )
    after = wait_version(examples, NAMESPACE, "billing-client", version + 1)
    data = secret_data(examples, NAMESPACE, "billing-client-key")
    assert data["api-key"] != old_key
    assert data["api-key-previous"] == old_key
    assert after["status"]["previousKey"]["version"] == version
    assert after["status"]["previousKey"]["validUntil"]
    assert after["status"]["lastHandledRotate"] == "e2e-1"


def test_grace_expires_on_a_fast_policy(examples: ThrowawayCluster) -> None:
    examples.apply(
        {
            "apiVersion": "apikeys.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {"name": "fast", "namespace": E2E_NAMESPACE},
            "spec": {"rotationPolicyRef": {"name": "e2e-fast"}},
        }
    )
    wait_ready(examples, E2E_NAMESPACE, "fast")
    wait_version(examples, E2E_NAMESPACE, "fast", 2)
    assert "api-key-previous" in secret_data(examples, E2E_NAMESPACE, "fast")

    def previous_gone() -> bool:
        return "api-key-previous" not in secret_data(examples, E2E_NAMESPACE, "fast")

    wait_for("the previous key to leave the Secret after 15s of grace", previous_gone, timeout=45)


def test_revoke_drops_the_old_key_at_once(examples: ThrowawayCluster) -> None:
    before = wait_ready(examples, NAMESPACE, "billing-client")
    version = before["status"]["currentKey"]["version"]
    old_key = secret_data(examples, NAMESPACE, "billing-client-key")["api-key"]
    examples.kubectl(
        "annotate",
        "apikey",
        "-n",
        NAMESPACE,
        "billing-client",
        "apikeys.dev/revoke=incident-1",
        "--overwrite",
    )
    after = wait_version(examples, NAMESPACE, "billing-client", version + 1)
    data = secret_data(examples, NAMESPACE, "billing-client-key")
    assert data["api-key"] != old_key
    assert old_key not in data.values()
    assert "previousKey" not in after["status"]
    assert after["status"]["lastHandledRevoke"] == "incident-1"


def test_the_vault_store_on_openbao(examples: ThrowawayCluster) -> None:
    examples.apply(
        {
            "apiVersion": "apikeys.dev/v1alpha1",
            "kind": "ApiKey",
            "metadata": {"name": "vaulted", "namespace": E2E_NAMESPACE},
            "spec": {"store": "vault", "deletionPolicy": "Delete"},
        }
    )
    obj = wait_ready(examples, E2E_NAMESPACE, "vaulted")
    assert obj["status"]["storeRef"] == f"vault:secret/apikeys/{E2E_NAMESPACE}/vaulted"
    key = secret_data(examples, E2E_NAMESPACE, "vaulted")["api-key"]
    assert obj["status"]["currentKey"]["fingerprint"] == fingerprint(key)
    assert "vaulted" in bao(examples, "kv", "list", f"secret/apikeys/{E2E_NAMESPACE}")

    examples.kubectl(
        "delete", "apikey", "-n", E2E_NAMESPACE, "vaulted", "--wait=true", "--timeout=120s"
    )

    def gone_from_openbao() -> bool:
        listing = bao(examples, "kv", "list", f"secret/apikeys/{E2E_NAMESPACE}", check=False)
        return "vaulted" not in listing

    wait_for("the key to be deleted from OpenBao", gone_from_openbao, timeout=60)


def test_deletion_removes_the_secret(examples: ThrowawayCluster) -> None:
    wait_ready(examples, E2E_NAMESPACE, "fast")
    examples.kubectl(
        "delete", "apikey", "-n", E2E_NAMESPACE, "fast", "--wait=true", "--timeout=120s"
    )

    def secret_gone() -> bool:
        found = examples.kubectl(
            "get", "secret", "-n", E2E_NAMESPACE, "fast", "--ignore-not-found", "-o", "name"
        )
        return found.strip() == ""

    wait_for("the projected Secret to be garbage-collected", secret_gone, timeout=60)


def test_metrics_are_served(examples: ThrowawayCluster) -> None:
    script = (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:9090/metrics', timeout=5).read().decode())"
    )
    text = examples.kubectl(
        "-n", OPERATOR_NAMESPACE, "exec", "deploy/apikey-operator", "--", "python", "-c", script
    )
    for metric in (
        "apikey_rotations_total",
        "apikey_key_age_seconds",
        "apikey_next_rotation_timestamp_seconds",
    ):
        assert metric in text


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("get", "secrets", NAMESPACE, "yes"),
        ("patch", "apikeys.apikeys.dev", NAMESPACE, "yes"),
        ("patch", "deployments.apps", NAMESPACE, "yes"),
        ("delete", "deployments.apps", NAMESPACE, "no"),
        ("get", "pods", NAMESPACE, "no"),
        ("create", "rotationpolicies.apikeys.dev", "", "no"),
        ("delete", "namespaces", "", "no"),
    ],
)
def test_the_service_account_has_least_privilege(
    operator: ThrowawayCluster, verb: str, resource: str, namespace: str, allowed: str
) -> None:
    args = ["auth", "can-i", verb, resource, f"--as={SERVICE_ACCOUNT}"]
    args += ["-n", namespace] if namespace else []
    assert operator.kubectl(*args, check=False).strip() == allowed
