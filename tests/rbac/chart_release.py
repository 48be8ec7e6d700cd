"""The chart installed with the real `helm install`, and the operator run as its ServiceAccount.

`ChartRelease` installs charts/apikey-operator into a LocalCluster's control plane (as the
admin, straight to the API server, so Helm's requests are not counted as the operator's),
mints a token for the chart's ServiceAccount with the TokenRequest API, and runs
`apikey-operator run` as child processes authenticated with that token through the
LocalCluster's proxy: the API server's RBAC authorizer decides every request with the rules
the chart rendered, nothing more.

What the operator process gets comes from the release, not from the test:
- its configuration is the chart's ConfigMap (`config.yaml`), byte for byte;
- its flags are the chart Deployment's container args (`--standalone` or not,
  `--namespace=NS` per watched namespace or `--all-namespaces`, `--log-format`), minus the
  config path (a local file here) and the health and metrics ports (several processes share
  the loopback interface; neither port needs any API permission).

No pod runs (no kubelet): the Deployment and its ReplicaSet exist, the processes stand in for
its pods. The release is uninstalled with `helm uninstall` and every cluster-scoped object it
made (ClusterRole, ClusterRoleBinding, ClusterKopfPeering) is removed at `uninstall()`.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from apikey_operator.testing.harness import LocalCluster
from apikey_operator.testing.process import OperatorProcess
from tests.chart.chart_tools import CHART, Helm, documents

RELEASE = "apikey-operator"
NAMESPACE = "apikey-operator"
CLUSTER_ROLES = "rbac.authorization.k8s.io/v1/clusterroles"
CLUSTER_ROLE_BINDINGS = "rbac.authorization.k8s.io/v1/clusterrolebindings"
ROLES = "rbac.authorization.k8s.io/v1/roles"
CLUSTER_PEERINGS = "kopf.dev/v1/clusterkopfpeerings"
PEERINGS = "kopf.dev/v1/kopfpeerings"
# Where a refusal shows up in an operator's log (its JSON lines and the DEBUG request lines).
# ("403 Forbidden" in request lines, kopf's APIForbiddenError, a Status reason "Forbidden".)
FORBIDDEN = re.compile(r"forbidden", re.IGNORECASE)
# Deployment args that cannot apply to a process on the test machine (see the module doc).
_LOCAL_ONLY = ("--config=", "--health-port=", "--metrics-port=")


class HelmFailed(AssertionError):
    """helm refused; the message carries its stderr."""


class ChartRelease:
    """One release of the chart in `cluster` with `values` (on top of the chart's own)."""

    def __init__(self, cluster: LocalCluster, helm: Helm, values: Mapping[str, Any],
                 workdir: pathlib.Path) -> None:
        self.cluster = cluster
        self.helm = helm
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        # The control plane installed the project's CRDs at start (from crds/, the source the
        # chart's files/crds/ copy is checked against). Helm refuses to take over objects
        # without its ownership metadata, so the release does not install them (crds.install
        # false) and skips its crds/ folder (kopf's peering CRDs, also already installed).
        self.values: dict[str, Any] = {**dict(values), "crds": {"install": False}}
        self.manifest: list[dict[str, Any]] = []
        self.token = ""
        self.processes: list[OperatorProcess] = []
        self.installed = False
        # What `helm uninstall` left of the cluster-scoped objects (it should leave nothing).
        self.left_by_helm: list[str] = []

    # --- helm --------------------------------------------------------------------------------

    @property
    def admin_kubeconfig(self) -> pathlib.Path:
        return pathlib.Path(self.cluster.plane.kubeconfig)

    def _helm(self, *args: str) -> str:
        result = self.helm.run(*args, kubeconfig=self.admin_kubeconfig)
        if result.returncode != 0:
            raise HelmFailed(f"helm {' '.join(args[:2])} failed:\n{result.stderr.strip()}")
        return result.stdout

    def install(self) -> ChartRelease:
        self._remove_cluster_objects()  # a previous run that died before its uninstall
        values_file = self.helm.values_file(self.values)
        # No --wait: no pod ever becomes ready without a kubelet.
        self._helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE,
                   "--values", str(values_file), "--skip-crds", "--timeout", "60s")
        self.installed = True
        self.manifest = documents(self._helm("get", "manifest", RELEASE,
                                             "--namespace", NAMESPACE))
        self.token = self.mint_token()
        return self

    def uninstall(self) -> None:
        for process in self.processes:
            process.stop()
        try:
            if self.installed:
                result = self.helm.run("uninstall", RELEASE, "--namespace", NAMESPACE,
                                       "--timeout", "60s", kubeconfig=self.admin_kubeconfig)
                self.installed = False
                if result.returncode != 0:
                    raise HelmFailed(f"helm uninstall failed:\n{result.stderr.strip()}")
                self.left_by_helm = self.cluster_objects()
        finally:
            self._remove_cluster_objects()

    def cluster_objects(self) -> list[str]:
        """The release's cluster-scoped objects in the cluster, as "resource/name"."""
        api = self.cluster.api
        selector = f"app.kubernetes.io/instance={RELEASE}"
        return [f"{resource}/{obj['metadata']['name']}"
                for resource in (CLUSTER_ROLE_BINDINGS, CLUSTER_ROLES, CLUSTER_PEERINGS)
                for obj in api.list_objects(resource, label_selector=selector)]

    def _remove_cluster_objects(self) -> None:
        """Delete them: the shared control plane's reset only empties namespaces."""
        for found in self.cluster_objects():
            resource, _, name = found.rpartition("/")
            self.cluster.api.delete_object(resource, None, name, missing_ok=True)

    # --- what the release made ---------------------------------------------------------------

    def objects(self, kind: str) -> list[dict[str, Any]]:
        return [doc for doc in self.manifest if doc.get("kind") == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.objects(kind)
        assert len(found) == 1, f"the release has {len(found)} {kind}s"
        return found[0]

    @property
    def service_account(self) -> str:
        return str(self.one("ServiceAccount")["metadata"]["name"])

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{NAMESPACE}:{self.service_account}"

    def config_text(self) -> str:
        """The operator's config.yaml, as the chart's ConfigMap holds it in the cluster."""
        name = self.one("ConfigMap")["metadata"]["name"]
        live = self.cluster.api.get_object("v1/configmaps", NAMESPACE, name)
        assert live is not None, f"the release's ConfigMap {name} is not in the cluster"
        return str(live["data"]["config.yaml"])

    def chart_args(self) -> list[str]:
        """The Deployment's `apikey-operator` args that apply to a local process."""
        name = self.one("Deployment")["metadata"]["name"]
        live = self.cluster.api.get_object("apps/v1/deployments", NAMESPACE, name)
        assert live is not None, f"the release's Deployment {name} is not in the cluster"
        (container,) = live["spec"]["template"]["spec"]["containers"]
        args = [str(a) for a in container["args"]]
        assert args[:1] == ["run"], args
        return [a for a in args[1:] if not a.startswith(_LOCAL_ONLY)]

    @property
    def replicas(self) -> int:
        return int(self.one("Deployment")["spec"]["replicas"])

    def mint_token(self, seconds: int = 3600) -> str:
        """A bound token for the chart's ServiceAccount (TokenRequest), as a pod would get."""
        path = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{self.service_account}/token"
        answer = self.cluster.api.request("POST", path, {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": seconds}})
        token = str(answer["status"]["token"])
        assert token, answer
        return token

    def kubeconfig(self, server: str | None = None) -> pathlib.Path:
        """A kubeconfig with the ServiceAccount's token; the proxy's URL by default."""
        proxy = self.cluster.proxy
        assert proxy is not None
        return self.cluster.plane.write_kubeconfig(
            self.workdir / "sa-kubeconfig", token=self.token,
            server=server or proxy.url, user=self.username, namespace=NAMESPACE)

    # --- operators as the ServiceAccount -----------------------------------------------------

    def start_operator(self, name: str = "operator",
                       env: Mapping[str, str] | None = None) -> OperatorProcess:
        process = OperatorProcess(self.kubeconfig(), self.workdir, standalone=False,
                                  extra_args=self.chart_args(), env=env, name=name)
        # The chart's ConfigMap itself, not a config of the test's making.
        process.config_path.write_text(self.config_text(), encoding="utf-8")
        self.processes.append(process)
        return process.start()

    def start_replicas(self) -> list[OperatorProcess]:
        """As many operator processes as the Deployment has replicas."""
        return [self.start_operator(f"replica-{i}") for i in range(self.replicas)]

    def logs(self) -> str:
        return "\n".join(p.logs() for p in self.processes)

    def forbidden_lines(self) -> list[str]:
        return [line for line in self.logs().splitlines() if FORBIDDEN.search(line)]

    def forbidden_requests(self, since: int | None = None) -> list[str]:
        """Every request through the proxy that the API server refused with 403."""
        records = self.cluster.api.traffic.records(since=since, include_watches=True,
                                                   include_discovery=True)
        return [f"{r.method} {r.path}" for r in records if r.status == 403]

    # --- RBAC edits (as the admin) -----------------------------------------------------------

    def role_objects(self) -> list[tuple[str, str | None, str]]:
        """(resource, namespace, name) of every ClusterRole and Role of the release."""
        found: list[tuple[str, str | None, str]] = []
        for doc in self.manifest:
            if doc.get("kind") == "ClusterRole":
                found.append((CLUSTER_ROLES, None, doc["metadata"]["name"]))
            elif doc.get("kind") == "Role":
                found.append((ROLES, doc["metadata"]["namespace"], doc["metadata"]["name"]))
        return found

    def tenant_role(self, namespace: str = "payments") -> tuple[str, str | None, str]:
        """Where the rules for a watched namespace live: the ClusterRole when the release
        watches every namespace, else that namespace's Role."""
        per_namespace = bool(self.values.get("watchNamespaces"))
        for resource, ns, name in self.role_objects():
            if not per_namespace and resource == CLUSTER_ROLES:
                return resource, ns, name
            if per_namespace and resource == ROLES and ns == namespace:
                return resource, ns, name
        raise AssertionError(f"no role for {namespace} in {self.role_objects()}")

    def rules(self, resource: str, namespace: str | None, name: str) -> list[dict[str, Any]]:
        live = self.cluster.api.get_object(resource, namespace, name)
        assert live is not None, (resource, namespace, name)
        return list(live.get("rules") or [])

    def set_rules(self, resource: str, namespace: str | None, name: str,
                  rules: Sequence[Mapping[str, Any]]) -> None:
        self.cluster.api.patch_object(resource, namespace, name,
                                      {"rules": [dict(r) for r in rules]})

    def can_i(self, verb: str, resource: str, namespace: str | None = None, *,
              group: str = "", subresource: str = "") -> bool:
        """What the API server's authorizer answers for the ServiceAccount right now
        (SubjectAccessReview as the admin)."""
        attributes: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attributes["namespace"] = namespace
        if subresource:
            attributes["subresource"] = subresource
        groups = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}",
                  "system:authenticated"]
        answer = self.cluster.api.request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": self.username, "groups": groups,
                         "resourceAttributes": attributes}})
        return bool(answer["status"].get("allowed"))


def without_verbs(rules: Iterable[Mapping[str, Any]], group: str, resource: str,
                  verbs: Iterable[str]) -> list[dict[str, Any]]:
    """`rules` with `verbs` taken out of the rule for group/resource (which must exist)."""
    dropped = set(verbs)
    out: list[dict[str, Any]] = []
    touched = False
    for rule in rules:
        rule = json.loads(json.dumps(dict(rule)))
        if group in rule.get("apiGroups", []) and resource in rule.get("resources", []):
            assert rule.get("resources") == [resource], f"a shared rule: {rule}"
            assert dropped <= set(rule["verbs"]), (dropped, rule)
            rule["verbs"] = [v for v in rule["verbs"] if v not in dropped]
            touched = True
            if not rule["verbs"]:
                continue
        out.append(rule)
    assert touched, f"no rule for {group or 'core'}/{resource} in {rules}"
    return out

