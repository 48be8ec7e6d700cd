"""The hostile-input corpus: every manifest in cases/ is applied and its exact outcome asserted.

One real kube-apiserver (validating against crds/) and one operator serve the
whole corpus; every case gets a namespace of its own. For each case the runner
checks the outcome written in the file, that no other object changed (every
resourceVersion outside the case's own new objects is as before), and that the
operator is still up: a control ApiKey in the case's namespace becomes Ready.
The `schemaless` cases run with CRDs that skip validation, to exercise the
operator's own checks.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import yaml

from apikey_operator import keys
from apikey_operator.testing.harness import (
    APIKEYS,
    POLICIES,
    SECRETS,
    LocalCluster,
    default_crd_dir,
)
from apikey_operator.testing.kubeapi import KubernetesApiError
from tests.corpus.manifests import OUTCOMES, CorpusCase, load_all
from tests.support.faults_contract import decoded_data

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CASES = load_all()
WATCHED = (APIKEYS, POLICIES, SECRETS, "v1/configmaps", "apps/v1/deployments")
BLOCKING_REASONS = ("InvalidSpec", "SecretConflict", "StoreConflict", "PolicyNotAllowed")
CRD_FILES = ("apikeys.dev_apikeys.yaml", "apikeys.dev_rotationpolicies.yaml")


class CorpusCluster:
    """The shared cluster, switching between the real CRDs and schemaless copies."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.schemaless = False

    def use(self, schemaless: bool) -> None:
        if schemaless == self.schemaless:
            return
        if not schemaless:
            self.cluster.restore_crds()
            self.schemaless = False
            return
        for file in CRD_FILES:
            crd = yaml.safe_load((default_crd_dir() / file).read_text())
            for version in crd["spec"]["versions"]:
                version["schema"]["openAPIV3Schema"] = {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": True}
            self.cluster.install_crd(crd)
        self.schemaless = True


@pytest.fixture(scope="module")
def corpus_cluster() -> Iterator[CorpusCluster]:
    with LocalCluster() as cluster:
        yield CorpusCluster(cluster)
        cluster.stop_operator_thread()
        leaks = cluster.leaks()
        assert not leaks, f"keys leaked into logs, events, status or metadata: {leaks}"


def snapshot(cluster: LocalCluster) -> dict[tuple[str, str, str], str]:
    """resourceVersion of every object a case must not touch (Events excluded). A
    RotationPolicy reports its own health and key count in its status, which any case's keys
    may change: for policies everything but the status counts."""
    out = {}
    for resource in WATCHED:
        for obj in cluster.api.list_objects(resource):
            meta = obj["metadata"]
            version = str(meta["resourceVersion"])
            if resource == POLICIES:
                version = json.dumps([obj.get("spec"), meta.get("generation"),
                                      meta.get("labels"), meta.get("annotations")],
                                     sort_keys=True)
            out[(resource, str(meta.get("namespace") or ""), meta["name"])] = version
    return out


def apply(cluster: LocalCluster, doc: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    body = json.loads(json.dumps(doc))
    meta = body.setdefault("metadata", {})
    if body.get("kind") not in ("RotationPolicy", "Namespace"):
        meta.setdefault("namespace", namespace)
    return cluster.api.create_object(body, keep_status=False)


def target_name(case: CorpusCase, docs: list[Any]) -> str:
    if "name" in case.expect:
        return str(case.expect["name"])
    apikeys = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ApiKey"]
    return str(apikeys[-1]["metadata"]["name"])


def test_the_corpus_is_large_and_every_case_is_well_formed() -> None:
    assert len(CASES) >= 60
    assert len({c.namespace for c in CASES}) == len(CASES)
    policies: list[str] = []
    for case in CASES:
        assert case.description, case.id
        assert case.outcome in OUTCOMES, case.id
        if case.outcome == "invalid-yaml":
            with pytest.raises(yaml.YAMLError):
                case.documents()
            continue
        docs = case.documents()
        assert docs, case.id
        policies += [d["metadata"]["name"] for d in docs
                     if isinstance(d, dict) and d.get("kind") == "RotationPolicy"]
    assert len(policies) == len(set(policies)), "policy names are cluster-wide: keep them unique"
    outcomes = {c.outcome for c in CASES}
    reasons = {c.expect.get("reason") for c in CASES}
    assert outcomes == set(OUTCOMES)
    assert {"InvalidSpec", "PolicyNotAllowed", "SecretConflict", "StoreConflict"} <= reasons


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_hostile_manifest_has_its_exact_outcome(corpus_cluster: CorpusCluster,
                                                     case: CorpusCase) -> None:
    corpus_cluster.use(bool(case.setup.get("schemaless")))
    cluster = corpus_cluster.cluster
    ns = case.namespace
    cluster.api.ensure_namespace(ns, case.setup.get("namespaceLabels") or {})

    if case.outcome == "invalid-yaml":
        with pytest.raises(yaml.YAMLError):
            case.documents()
        before = snapshot(cluster)
    else:
        docs = case.documents()
        target = None if case.outcome == "rejected" else target_name(case, docs)
        versions = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ApiKey"
                    and d["metadata"]["name"] == target]
        setup_docs = docs[:-1] if case.outcome == "rejected" else [
            d for d in docs if d not in versions] + versions[:-1]
        case_doc = docs[-1] if case.outcome == "rejected" else versions[-1]
        updating = len(versions) > 1
        for doc in setup_docs:
            apply(cluster, doc, ns)
            if doc.get("kind") == "ApiKey":
                cluster.wait_ready(ns, doc["metadata"]["name"])
        before = snapshot(cluster)
        if updating:
            # Its own status changes (that is the outcome); its Secret and store entry may not.
            before.pop((APIKEYS, ns, str(target)), None)
        if case.outcome == "rejected":
            check_rejected(cluster, case, case_doc)
        elif updating:
            assert target is not None
            cluster.api.patch_object(APIKEYS, ns, target, {"spec": case_doc.get("spec")})
            check_outcome(cluster, case, target)
        else:
            assert target is not None
            apply(cluster, case_doc, ns)
            check_outcome(cluster, case, target)
    if case.outcome not in ("rejected", "invalid-yaml"):
        time.sleep(0.1)  # a late, unexpected write by the operator would land in this window
    after = snapshot(cluster)
    # Only what a case names in `replaces` may change (e.g. a forged Secret that the garbage
    # collector deletes and the operator then replaces with its own).
    replaced = {(SECRETS, ns, name) for name in case.expect.get("replaces", [])}
    changed = sorted(f"{k[0]} {k[1]}/{k[2]}" for k, rv in before.items()
                     if after.get(k) != rv and k not in replaced)
    assert changed == [], f"objects outside the case were touched: {changed}"
    created = sorted(k for k in after if k not in before)
    allowed = allowed_new_objects(case, cluster)
    unexpected = [f"{k[0]} {k[1]}/{k[2]}" for k in created if k not in allowed]
    assert unexpected == [], f"unexpected objects were created: {unexpected}"
    if case.outcome in ("rejected", "invalid-yaml"):
        return  # the operator never saw it
    # The operator is still up and serving.
    apply(cluster, {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
                    "metadata": {"name": "control"}, "spec": {}}, ns)
    cluster.wait_ready(ns, "control")


def allowed_new_objects(case: CorpusCase, cluster: LocalCluster) -> set[tuple[str, str, str]]:
    if case.outcome in ("rejected", "invalid-yaml"):
        return set()
    docs = case.documents()
    name = target_name(case, docs)
    secret = secret_name_of(cluster.apikey(case.namespace, name) or {}, name)
    store = [obj["metadata"]["name"] for obj in cluster.api.list_objects(SECRETS,
                                                                         "apikey-operator")
             if (obj["metadata"].get("annotations") or {}).get("apikeys.dev/apikey")
             == f"{case.namespace}/{name}"]
    allowed = {(APIKEYS, case.namespace, name), (SECRETS, case.namespace, secret)}
    allowed |= {(SECRETS, "apikey-operator", s) for s in store}
    return allowed


def secret_name_of(body: Mapping[str, Any], name: str) -> str:
    spec = body.get("spec")
    secret = spec.get("secret") if isinstance(spec, Mapping) else None
    return str(secret.get("name") or name) if isinstance(secret, Mapping) else name


def check_rejected(cluster: LocalCluster, case: CorpusCase, doc: Any) -> None:
    status = int(case.expect["status"])
    if not isinstance(doc, dict) or case.id.split("-", 1)[1].startswith("raw-"):
        # What kubectl would send for a document that is not an ApiKey object.
        with pytest.raises(KubernetesApiError) as raw:
            cluster.api.request(
                "POST", f"/apis/apikeys.dev/v1alpha1/namespaces/{case.namespace}/apikeys",
                json.dumps(doc).encode())
        assert raw.value.status == status, raw.value.message[:300]
        assert cluster.api.list_objects(APIKEYS, case.namespace) == []
        return
    with pytest.raises(KubernetesApiError) as info:
        apply(cluster, doc, case.namespace)
    assert info.value.status == status, info.value.message
    field = case.expect.get("field")
    if field:
        assert field in info.value.message, info.value.message
    kind = doc.get("kind")
    resource = POLICIES if kind == "RotationPolicy" else APIKEYS
    namespace = None if kind == "RotationPolicy" else case.namespace
    name = (doc.get("metadata") or {}).get("name")
    if isinstance(name, str) and len(name) < 254:
        assert cluster.api.get_object(resource, namespace, name) is None


def check_outcome(cluster: LocalCluster, case: CorpusCase, name: str) -> None:
    ns, expect = case.namespace, case.expect
    if case.outcome == "condition":
        cond = cluster.wait_reason(ns, name, expect["reason"], type_=expect["type"])
        assert cond["status"] == expect["status"], cond
        assert expect["message"] in cond["message"], cond["message"]
        if expect["reason"] in BLOCKING_REASONS:
            # Where the user looks: Ready=False with the reason, and a Warning Event.
            assert cluster.condition(ns, name).get("status") == "False"
            cluster.wait_for(lambda: expect["reason"] in cluster.event_reasons(ns, name),
                             what=f"a {expect['reason']} Event")
        return
    version = int(expect.get("version", 1))
    # 60 s: some outcomes wait on kube-controller-manager's garbage collector (a foreign
    # Secret with a forged owner), which took 21 s once on a loaded machine.
    cluster.wait_for(lambda: (b := cluster.wait_ready(ns, name, timeout=60)) and
                     (b.get("status") or {}).get("currentKey", {}).get("version") == version
                     and b, timeout=60, what=f"{ns}/{name} Ready at version {version}")
    body = cluster.apikey(ns, name) or {}
    status = body["status"]
    secret = cluster.secret(ns, secret_name_of(body, name))
    data = decoded_data(secret)
    current_key = ((body.get("spec") or {}).get("secret") or {}).get("currentKey", "api-key")
    assert keys.fingerprint(data[current_key]) == status["currentKey"]["fingerprint"]
    for key, value in (expect.get("secretAnnotation") or {}).items():
        assert (secret or {})["metadata"]["annotations"][key] == value
    prefix = expect.get("handledRotatePrefix")
    if prefix:
        handled = status.get("lastHandledRotate", "")
        assert handled.startswith(prefix) and len(handled) <= 4096, handled[:80]


@pytest.mark.parametrize("value", ["r" * 200_000, "🔁 rotate ключ"], ids=["200kB", "unicode"])
def test_a_huge_or_unicode_rotate_annotation_rotates_exactly_once(
    corpus_cluster: CorpusCluster, value: str
) -> None:
    corpus_cluster.use(False)
    cluster = corpus_cluster.cluster
    ns = f"rot-{len(value)}"
    cluster.api.ensure_namespace(ns)
    apply(cluster, {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey",
                    "metadata": {"name": "billing"}, "spec": {}}, ns)
    cluster.wait_ready(ns, "billing")
    cluster.annotate(ns, "billing", {"apikeys.dev/rotate": value})
    cluster.wait_for(lambda: ((cluster.apikey(ns, "billing") or {}).get("status") or {})
                     .get("currentKey", {}).get("version") == 2, what="the rotation")
    status = (cluster.apikey(ns, "billing") or {})["status"]
    assert status["lastHandledRotate"].startswith("sha256:")
    assert len(status["lastHandledRotate"]) <= 64
    # Re-applying the same value (a GitOps re-sync) is not a new request.
    cluster.annotate(ns, "billing", {"apikeys.dev/rotate": None})
    cluster.annotate(ns, "billing", {"apikeys.dev/rotate": value})
    time.sleep(1.0)
    assert (cluster.apikey(ns, "billing") or {})["status"]["currentKey"]["version"] == 2
    assert cluster.event_reasons(ns, "billing").count("Rotated") == 1
