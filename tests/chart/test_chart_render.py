"""The chart rendered by the real helm CLI: valid manifests, hardened pod, least-privilege RBAC."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart_tools import CHART, KUBE_VERSION, Helm, Render, RenderError, documents

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# kubernetes-validate's schemas (per minor): a Kubernetes the chart has been checked on, and the
# one `helm template` renders for (the repository's pinned kube-apiserver).
SCHEMA_VERSIONS = ["1.33.0", "{}.{}.0".format(*KUBE_VERSION.split(".")[:2])]
# Kinds served by CRDs (ours, kopf's, the Prometheus Operator's): no upstream schema.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "KopfPeering", "ClusterKopfPeering"}

DEFAULT: dict[str, Any] = {}
HA_SHARDED: dict[str, Any] = {
    "replicaCount": 3,
    "watchNamespaces": ["payments", "billing"],
    "logFormat": "text",
    "stores": {
        "kubernetes": {"type": "kubernetes"},
        "vault": {
            "type": "vault",
            "address": "https://vault.example:8200",
            "mount": "secret",
            "pathPrefix": "apikeys",
            "auth": {"method": "kubernetes", "role": "apikey-operator"},
        },
        "aws": {"type": "aws-secrets-manager", "region": "eu-west-1", "namePrefix": "apikeys/"},
        "azure": {"type": "azure-key-vault", "vaultUrl": "https://payments-kv.vault.azure.net",
                  "namePrefix": "apikeys-", "auth": {"method": "default"},
                  "purgeOnDelete": False, "caFile": None},
    },
    "serviceAccount": {
        "annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/apikeys"}
    },
    "metrics": {
        "service": {"enabled": True},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "prometheusRule": {"enabled": True, "rotationOverdueSeconds": 3600},
    },
    "crds": {"annotations": {"argocd.argoproj.io/sync-wave": "-1"}},
    "extraArgs": ["--verbose"],
    "generators": {"payments-vendor": {"type": "webhook"}},
}
MINIMAL: dict[str, Any] = {
    "image": {"repository": "registry.example/apikey-operator", "digest": "sha256:" + "a" * 64},
    "serviceAccount": {"create": False, "name": "existing-sa"},
    "crds": {"install": False},
    "metrics": {"enabled": False},
}
SCENARIOS = {"default": DEFAULT, "ha-sharded": HA_SHARDED, "minimal": MINIMAL}

# Every (apiGroup, resource, verb) the operator may hold, by where it may hold it.
NAMESPACED_ALLOWED = {
    ("apikeys.dev", "apikeys"): {"get", "list", "watch", "patch", "update"},
    ("apikeys.dev", "apikeys/status"): {"get", "patch", "update"},
    ("apikeys.dev", "apikeys/finalizers"): {"update"},
    ("", "secrets"): {"get", "list", "watch", "create", "update", "patch", "delete"},
    ("", "events"): {"create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apps", "deployments"): {"get", "patch"},
    ("apps", "statefulsets"): {"get", "patch"},
    ("apps", "daemonsets"): {"get", "patch"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
}
CLUSTER_ONLY_ALLOWED = {
    ("apikeys.dev", "rotationpolicies"): {"get", "list", "watch"},
    ("apikeys.dev", "rotationpolicies/status"): {"patch"},
    # A cluster-scoped RotationPolicy's Events are created in "default".
    ("", "events"): {"create", "patch"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
}
STORE_ROLE_ALLOWED = {("", "secrets"): NAMESPACED_ALLOWED[("", "secrets")]}


def objects(rendered: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [o for o in rendered["objects"] if o["kind"] == kind]


def only(rendered: dict[str, Any], kind: str) -> dict[str, Any]:
    (found,) = objects(rendered, kind)
    return found


def container(rendered: dict[str, Any]) -> dict[str, Any]:
    (operator,) = only(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = operator
    return result


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) triples; fails on anything a triple cannot express."""
    result = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule shape {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    result.add((group, resource, verb))
    return result


def allowed(table: dict[tuple[str, str], set[str]]) -> set[tuple[str, str, str]]:
    return {(g, r, v) for (g, r), verbs in table.items() for v in verbs}


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_manifest_is_valid_for_kubernetes(render: Render, name: str) -> None:
    rendered = render(SCENARIOS[name])
    assert rendered["objects"], "Helm created nothing"
    for obj in rendered["objects"]:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        for version in SCHEMA_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_pod_runs_hardened(render: Render, name: str) -> None:
    rendered = render(SCENARIOS[name])
    pod = only(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container(rendered)["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = container(rendered)["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container(rendered)[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in container(rendered)["ports"]}
    assert ports["health"] == 8080


def test_default_args_env_and_config(render: Render) -> None:
    rendered = render(DEFAULT)
    operator = container(rendered)
    assert operator["image"] == "ghcr.io/apikey-operator/apikey-operator:0.1.0"
    assert operator["args"] == [
        "run",
        "--config=/etc/apikey-operator/config.yaml",
        "--log-format=json",
        "--health-port=8080",
        "--metrics-port=9090",
        "--standalone",
        "--all-namespaces",
    ]
    env = {e["name"]: e for e in operator["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    mounts = {m["name"]: m["mountPath"] for m in operator["volumeMounts"]}
    assert mounts["config"] == "/etc/apikey-operator"
    config = yaml.safe_load(only(rendered, "ConfigMap")["data"]["config.yaml"])
    assert config == {"stores": {"kubernetes": {"type": "kubernetes"}}}
    deployment = only(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not objects(rendered, "ClusterKopfPeering") and not objects(rendered, "KopfPeering")
    assert not objects(rendered, "PodDisruptionBudget")
    assert not objects(rendered, "Service") and not objects(rendered, "ServiceMonitor")
    assert "all namespaces" in rendered["notes"] and "standalone" in rendered["notes"]


def test_ha_sharded_args_peering_and_config(render: Render) -> None:
    rendered = render(HA_SHARDED)
    operator = container(rendered)
    assert "--standalone" not in operator["args"]
    assert "--all-namespaces" not in operator["args"]
    assert [a for a in operator["args"] if a.startswith("--namespace=")] == [
        "--namespace=billing",
        "--namespace=payments",
    ]
    assert "--log-format=text" in operator["args"] and operator["args"][-1] == "--verbose"
    deployment = only(rendered, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    peerings = objects(rendered, "KopfPeering")
    assert sorted((p["metadata"]["namespace"], p["metadata"]["name"]) for p in peerings) == [
        ("billing", "apikey-operator"),
        ("payments", "apikey-operator"),
    ]
    assert not objects(rendered, "ClusterKopfPeering")
    assert only(rendered, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    config = yaml.safe_load(only(rendered, "ConfigMap")["data"]["config.yaml"])
    assert config == {"stores": HA_SHARDED["stores"], "generators": HA_SHARDED["generators"]}
    account = only(rendered, "ServiceAccount")
    wanted = HA_SHARDED["serviceAccount"]["annotations"]
    assert wanted.items() <= account["metadata"]["annotations"].items()


def test_cluster_wide_ha_uses_a_cluster_peering(render: Render) -> None:
    rendered = render({"replicaCount": 2})
    assert only(rendered, "ClusterKopfPeering")["metadata"]["name"] == "apikey-operator"
    assert "--standalone" not in container(rendered)["args"]
    (role,) = objects(rendered, "ClusterRole")
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in grants(role["rules"])


def test_minimal_uses_digest_and_existing_account(render: Render) -> None:
    rendered = render(MINIMAL)
    operator = container(rendered)
    assert operator["image"] == "registry.example/apikey-operator@sha256:" + "a" * 64
    assert not any(a.startswith("--metrics-port") for a in operator["args"])
    assert not objects(rendered, "ServiceAccount")
    pod = only(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "existing-sa"
    ours = [
        o
        for o in objects(rendered, "CustomResourceDefinition")
        if o["spec"]["group"] == "apikeys.dev"
    ]
    assert ours == []
    for binding in objects(rendered, "ClusterRoleBinding") + objects(rendered, "RoleBinding"):
        assert binding["subjects"][0]["name"] == "existing-sa"


@pytest.mark.parametrize("name", SCENARIOS)
def test_rbac_grants_nothing_beyond_the_allow_list(render: Render, name: str) -> None:
    rendered = render(SCENARIOS[name])
    namespace = "apikey-operator"
    cluster_allowed = allowed(CLUSTER_ONLY_ALLOWED)
    if not SCENARIOS[name].get("watchNamespaces"):
        cluster_allowed |= allowed(NAMESPACED_ALLOWED)
    for role in objects(rendered, "ClusterRole"):
        extra = grants(role["rules"]) - cluster_allowed
        assert not extra, f"ClusterRole {role['metadata']['name']} grants {sorted(extra)}"
    for role in objects(rendered, "Role"):
        table = (
            STORE_ROLE_ALLOWED
            if role["metadata"]["name"].endswith("-store")
            else (NAMESPACED_ALLOWED)
        )
        extra = grants(role["rules"]) - allowed(table)
        assert not extra, f"Role {role['metadata']['name']} grants {sorted(extra)}"
        if role["metadata"]["name"].endswith("-store"):
            assert role["metadata"]["namespace"] == namespace
    bound = {b["roleRef"]["name"] for b in objects(rendered, "ClusterRoleBinding")}
    assert bound == {r["metadata"]["name"] for r in objects(rendered, "ClusterRole")}


def test_rbac_covers_what_the_operator_needs(render: Render) -> None:
    cluster_wide = grants(only(render(DEFAULT), "ClusterRole")["rules"])
    needed = allowed(CLUSTER_ONLY_ALLOWED) | allowed(NAMESPACED_ALLOWED)
    # Peering grants appear only with more than one replica.
    needed -= {t for t in needed if t[0] == "kopf.dev"}
    assert needed <= cluster_wide

    sharded = render(HA_SHARDED)
    cluster_role = grants(only(sharded, "ClusterRole")["rules"])
    assert ("", "secrets", "get") not in cluster_role, "sharded mode must not read all Secrets"
    roles = {
        (r["metadata"]["namespace"], r["metadata"]["name"]): grants(r["rules"])
        for r in objects(sharded, "Role")
    }
    for namespace in ("billing", "payments"):
        assert roles[(namespace, "apikey-operator")] == allowed(NAMESPACED_ALLOWED)
    assert roles[("apikey-operator", "apikey-operator-store")] == allowed(STORE_ROLE_ALLOWED)


def test_the_rbac_check_catches_a_wildcard() -> None:
    with pytest.raises(AssertionError, match="wildcard"):
        grants([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}])
    too_broad = grants([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    assert too_broad - allowed(NAMESPACED_ALLOWED)


def test_crds_come_from_the_source_of_truth(render: Render) -> None:
    rendered = render(HA_SHARDED)
    ours = {
        o["metadata"]["name"]: o
        for o in objects(rendered, "CustomResourceDefinition")
        if o["spec"]["group"] == "apikeys.dev"
    }
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        source = yaml.safe_load(path.read_text(encoding="utf-8"))
        crd = ours.pop(source["metadata"]["name"])
        assert crd["spec"] == source["spec"]
        annotations = crd["metadata"]["annotations"]
        assert annotations["helm.sh/resource-policy"] == "keep"
        assert annotations["argocd.argoproj.io/sync-wave"] == "-1"
    assert ours == {}
    kopf = {o["metadata"]["name"] for o in objects(rendered, "CustomResourceDefinition")}
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= kopf


def test_metrics_service_monitor_and_alerts(render: Render) -> None:
    rendered = render(HA_SHARDED)
    service = only(rendered, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = only(rendered, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    rules = {
        r["alert"]: r["expr"]
        for group in only(rendered, "PrometheusRule")["spec"]["groups"]
        for r in group["rules"]
    }
    assert 'apikey_rotations_total{result="failure"}' in rules["ApiKeyRotationFailing"]
    assert rules["ApiKeyRotationOverdue"] == (
        "time() > apikey_next_rotation_timestamp_seconds + 3600"
    )
    assert "apikey_store_errors_total" in rules["ApiKeyStoreErrors"]
    assert rules["ApiKeyTooOld"] == "apikey_key_age_seconds > 7776000"


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 0},
        {"logFormat": "xml"},
        {"watchNamespaces": ["Not_A_Namespace"]},
        {"watchNamespaces": ["a", "a"]},
        {"stores": {"kubernetes": {"type": "etcd"}}},
        {"stores": {"vault": {"type": "vault"}}},
        {"stores": {"aws": {"type": "aws-secrets-manager"}}},
        {"stores": {"azure": {"type": "azure-key-vault"}}},
        {"stores": {"azure": {"type": "azure-key-vault", "vaultUrl": "http://kv.example"}}},
        {"stores": {"azure": {"type": "azure-key-vault", "vaultUrl": "https://kv.example",
                              "namePrefix": "keys/"}}},
        {"stores": {"azure": {"type": "azure-key-vault", "vaultUrl": "https://kv.example",
                              "auth": {"method": "client-secret", "tenantId": "t"}}}},
        {"metrics": {"port": 80}},
        {"generators": {"vendor": {"type": "ftp"}}},
        {"usage": {"prometheus": {"url": "prometheus:9090"}}},
        {"usage": {"graphite": {"url": "http://g"}}},
        {"unknownKey": True},
    ],
    ids=lambda v: next(iter(v)),
)
def test_values_schema_rejects_bad_values(render: Render, values: dict[str, Any]) -> None:
    with pytest.raises(RenderError, match=r"(?i)schema|values"):
        render(values)


def lint_findings(result: subprocess.CompletedProcess[str]) -> list[str]:
    """helm lint's [WARNING] and [ERROR] lines ([INFO] ones are advice, e.g. a chart icon)."""
    return [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith(("[WARNING]", "[ERROR]"))
    ]


@pytest.mark.parametrize("name", SCENARIOS)
def test_helm_lint_strict_passes(helm: Helm, name: str) -> None:
    result = helm.lint(values=SCENARIOS[name], strict=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lint_findings(result) == []
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_helm_lint_catches_a_broken_template(helm: Helm, tmp_path: Path) -> None:
    broken = tmp_path / "apikey-operator"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("{{ .Values.nope.deeper }}\n")
    result = helm.lint(broken, strict=True)
    assert result.returncode == 1
    (error,) = [line for line in lint_findings(result) if line.startswith("[ERROR]")]
    assert "templates/broken.yaml" in error and "nil pointer" in error
    assert "1 chart(s) linted, 1 chart(s) failed" in result.stdout + result.stderr


def test_notes_describe_the_release(render: Render) -> None:
    sharded = render(HA_SHARDED)["notes"]
    assert sharded.startswith("apikey-operator 0.1.0 is installed in namespace apikey-operator.")
    assert "Watching: namespaces billing,payments\n" in sharded
    assert 'Mode:     3 replicas, kopf peering "apikey-operator" (one active)\n' in sharded
    assert "Stores:   aws, azure, kubernetes, vault\n" in sharded
    assert "rollout status deployment/apikey-operator" in sharded
    assert "did not install the CRDs" not in sharded
    minimal = render(MINIMAL)["notes"]
    assert "Watching: all namespaces\n" in minimal
    assert "Mode:     standalone (1 replica)\n" in minimal
    assert minimal.rstrip().endswith("repository's crds/ folder before creating ApiKeys.")


@pytest.mark.parametrize("name", SCENARIOS)
def test_install_renders_what_template_renders(render: Render, name: str) -> None:
    """`helm install` against a real API server makes the manifest `helm template` printed
    (the chart's crds/ folder aside, which install keeps out of the release manifest)."""
    rendered = render(SCENARIOS[name])
    release = rendered["release"]
    assert release["info"]["status"] == "pending-install"
    assert release["namespace"] == "apikey-operator"
    from_crds_folder = [
        o
        for o in rendered["objects"]
        if o["kind"] == "CustomResourceDefinition" and o["spec"]["group"] == "kopf.dev"
    ]
    assert len(from_crds_folder) == 2
    templated = [o for o in rendered["objects"] if o not in from_crds_folder]
    assert documents(release["manifest"]) == templated


def test_the_usage_source_reaches_the_operator_config(render: Render) -> None:
    usage = {"prometheus": {"url": "http://prometheus-operated.monitoring:9090",
                            "timeout": "5s"}}
    rendered = render({"usage": usage})
    config = yaml.safe_load(only(rendered, "ConfigMap")["data"]["config.yaml"])
    assert config["usage"] == usage
    default = yaml.safe_load(only(render({}), "ConfigMap")["data"]["config.yaml"])
    assert "usage" not in default
