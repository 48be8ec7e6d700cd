"""Object semantics of the emulated API server, checked over real HTTP."""

from __future__ import annotations

import base64

import pytest

from apikey_operator.testing.kube_runner import EmulatorRunner
from tests.harness.http import APIKEYS, Http, apikey, secret

pytestmark = pytest.mark.integration

SECRETS = "/api/v1/namespaces/default/secrets"
KEYS = f"{APIKEYS}/namespaces/default/apikeys"


def test_create_sets_uid_resource_version_generation_and_timestamp(http: Http) -> None:
    reply = http.post(KEYS, apikey("a"))
    assert reply.status == 201
    meta = reply.body["metadata"]
    assert len(meta["uid"]) == 36
    assert meta["resourceVersion"].isdigit()
    assert meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z")
    again = http.get(f"{KEYS}/a").body["metadata"]
    assert again["uid"] == meta["uid"] and again["resourceVersion"] == meta["resourceVersion"]


def test_resource_versions_grow_with_every_write(http: Http) -> None:
    first = http.post(KEYS, apikey("a")).body["metadata"]["resourceVersion"]
    second = http.patch(f"{KEYS}/a", {"metadata": {"labels": {"x": "y"}}}).body
    assert int(second["metadata"]["resourceVersion"]) > int(first)
    assert second["metadata"]["generation"] == 1  # metadata changes keep the generation


def test_generate_name_makes_unique_names(http: Http) -> None:
    body = {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "ev-"},
            "reason": "R", "message": "m", "involvedObject": {"kind": "ApiKey", "name": "a"}}
    names = {http.post("/api/v1/namespaces/default/events", body).body["metadata"]["name"]
             for _ in range(20)}
    assert len(names) == 20
    assert all(name.startswith("ev-") and len(name) == 8 for name in names)


def test_create_twice_is_409_already_exists(http: Http) -> None:
    assert http.post(KEYS, apikey("a")).status == 201
    reply = http.post(KEYS, apikey("a"))
    assert reply.status == 409
    assert reply.body["reason"] == "AlreadyExists"


def test_stale_resource_version_is_a_conflict_on_put_and_patch(http: Http) -> None:
    created = http.post(KEYS, apikey("a")).body
    stale = created["metadata"]["resourceVersion"]
    http.patch(f"{KEYS}/a", {"spec": {"store": "vault"}})
    put = http.put(f"{KEYS}/a", created)
    assert put.status == 409
    assert put.body["reason"] == "Conflict"
    patch = http.patch(f"{KEYS}/a", {"metadata": {"resourceVersion": stale},
                                      "spec": {"store": "aws"}})
    assert patch.status == 409
    assert http.get(f"{KEYS}/a").body["spec"]["store"] == "vault"


def test_json_patch_test_on_resource_version_fails_with_422(http: Http) -> None:
    created = http.post(KEYS, apikey("a")).body
    rv = created["metadata"]["resourceVersion"]
    ok = http.patch(f"{KEYS}/a", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}], patch_type="json")
    assert ok.status == 200
    assert ok.body["metadata"]["finalizers"] == ["x/y"]
    stale = http.patch(f"{KEYS}/a", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "remove", "path": "/metadata/finalizers"}], patch_type="json")
    assert stale.status == 422


def test_put_replaces_and_bumps_generation_on_spec_change(http: Http) -> None:
    created = http.post(KEYS, apikey("a")).body
    created["spec"]["store"] = "vault"
    reply = http.put(f"{KEYS}/a", created)
    assert reply.status == 200
    assert reply.body["spec"]["store"] == "vault"
    assert reply.body["metadata"]["generation"] == 2


def test_status_subresource_is_separate_from_the_main_object(http: Http) -> None:
    http.post(KEYS, {**apikey("a"), "status": {"storeRef": "ignored-on-create"}})
    assert "status" not in http.get(f"{KEYS}/a").body
    main = http.patch(f"{KEYS}/a", {"status": {"storeRef": "x"}, "spec": {"store": "vault"}})
    assert "status" not in main.body
    assert main.body["spec"]["store"] == "vault"
    status = http.patch(f"{KEYS}/a/status", {"status": {"storeRef": "s"},
                                             "spec": {"store": "aws"}})
    assert status.body["status"] == {"storeRef": "s"}
    assert status.body["spec"]["store"] == "vault"
    assert status.body["metadata"]["generation"] == 2  # only the spec change counted
    put = http.put(f"{KEYS}/a/status", {**status.body, "status": {"storeRef": "t"}})
    assert put.body["status"] == {"storeRef": "t"}
    stale = http.put(f"{KEYS}/a/status", {**status.body, "status": {"storeRef": "u"}})
    assert stale.status == 409


def test_no_op_writes_keep_the_resource_version(http: Http) -> None:
    created = http.post(KEYS, apikey("a")).body
    same = http.patch(f"{KEYS}/a", {"spec": {"store": "kubernetes"}}).body
    assert same["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_label_and_field_selectors_filter_lists(http: Http) -> None:
    for name, labels in [("a", {"tier": "gold", "env": "prod"}), ("b", {"tier": "silver"}),
                         ("c", {})]:
        http.post(SECRETS, {**secret(name), "metadata": {"name": name, "labels": labels}})

    def names(query: str) -> list[str]:
        return [i["metadata"]["name"] for i in http.get(f"{SECRETS}?{query}").body["items"]]

    assert names("labelSelector=tier%3Dgold") == ["a"]
    assert names("labelSelector=tier%20in%20(gold,silver)") == ["a", "b"]
    assert names("labelSelector=!tier") == ["c"]
    assert names("labelSelector=tier,env!%3Dprod") == ["b"]
    assert names("fieldSelector=metadata.name%3Db") == ["b"]
    assert names("fieldSelector=metadata.name!%3Db") == ["a", "c"]
    assert http.get(f"{SECRETS}?labelSelector=tier%20in%20gold").status == 400


def test_lists_carry_kind_api_version_and_a_real_resource_version(http: Http) -> None:
    created = http.post(KEYS, apikey("a")).body
    listing = http.get(KEYS).body
    assert listing["kind"] == "ApiKeyList"
    assert listing["apiVersion"] == "apikeys.dev/v1alpha1"
    assert int(listing["metadata"]["resourceVersion"]) >= int(
        created["metadata"]["resourceVersion"])
    assert listing["items"][0]["kind"] == "ApiKey"
    assert http.get("/api/v1/secrets").body["kind"] == "SecretList"


def test_lists_page_with_limit_and_continue(http: Http) -> None:
    for index in range(5):
        http.post(SECRETS, secret(f"s{index}"))
    first = http.get(f"{SECRETS}?limit=2").body
    assert [i["metadata"]["name"] for i in first["items"]] == ["s0", "s1"]
    token = first["metadata"]["continue"]
    rest = http.get(f"{SECRETS}?limit=10&continue={token}").body
    assert [i["metadata"]["name"] for i in rest["items"]] == ["s2", "s3", "s4"]
    assert "continue" not in rest["metadata"]


def test_secret_string_data_becomes_base64_data(http: Http) -> None:
    reply = http.post(SECRETS, secret("s", stringData={"k": "välue"}, data={"o": "eA=="}))
    assert "stringData" not in reply.body
    assert base64.b64decode(reply.body["data"]["k"]).decode() == "välue"
    assert reply.body["data"]["o"] == "eA=="
    assert reply.body["type"] == "Opaque"
    assert http.post(SECRETS, secret("bad", data={"k": "not base64!"})).status == 400


def test_deleting_an_owner_collects_its_dependents(http: Http, kube_api: EmulatorRunner) -> None:
    owner = http.post(KEYS, apikey("a")).body
    ref = {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey", "name": "a",
           "uid": owner["metadata"]["uid"], "controller": True}
    http.post(SECRETS, {**secret("owned"), "metadata": {"name": "owned",
                                                         "ownerReferences": [ref]}})
    http.post(SECRETS, secret("unowned"))
    assert ("v1/secrets", "default", "owned") in kube_api.emulator.objects
    assert http.delete(f"{KEYS}/a").status == 200
    assert http.get(f"{SECRETS}/owned").status == 404
    assert http.get(f"{SECRETS}/unowned").status == 200
    assert ("v1/secrets", "default", "owned") not in kube_api.emulator.objects


def test_orphan_propagation_keeps_dependents(http: Http) -> None:
    owner = http.post(KEYS, apikey("a")).body
    ref = {"apiVersion": "apikeys.dev/v1alpha1", "kind": "ApiKey", "name": "a",
           "uid": owner["metadata"]["uid"]}
    http.post(SECRETS, {**secret("owned"), "metadata": {"name": "owned",
                                                         "ownerReferences": [ref]}})
    http.delete(f"{KEYS}/a", {"propagationPolicy": "Orphan"})
    kept = http.get(f"{SECRETS}/owned")
    assert kept.status == 200
    assert "ownerReferences" not in kept.body["metadata"]


def test_finalizers_delay_deletion_until_the_last_one_is_removed(http: Http) -> None:
    http.post(KEYS, {**apikey("a"), "metadata": {"name": "a", "finalizers": ["a/b", "c/d"]}})
    deleting = http.delete(f"{KEYS}/a")
    assert deleting.status == 200
    assert deleting.body["metadata"]["deletionTimestamp"]
    assert http.get(f"{KEYS}/a").status == 200
    again = http.delete(f"{KEYS}/a").body
    assert again["metadata"]["deletionTimestamp"] == deleting.body["metadata"][
        "deletionTimestamp"]
    added = http.patch(f"{KEYS}/a", {"metadata": {"finalizers": ["a/b", "c/d", "e/f"]}})
    assert added.status == 422
    http.patch(f"{KEYS}/a", {"metadata": {"finalizers": ["c/d"]}})
    assert http.get(f"{KEYS}/a").status == 200
    http.patch(f"{KEYS}/a", {"metadata": {"finalizers": None}})
    assert http.get(f"{KEYS}/a").status == 404


def test_namespaces_are_objects(http: Http, kube_api: EmulatorRunner) -> None:
    created = http.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                               "metadata": {"name": "team-a"}})
    assert created.status == 201
    assert created.body["status"]["phase"] == "Active"
    labelled = http.patch("/api/v1/namespaces/team-a", {"metadata": {"labels": {"env": "prod"}}})
    assert labelled.body["metadata"]["labels"]["env"] == "prod"
    listed = http.get("/api/v1/namespaces?labelSelector=env%3Dprod").body
    assert [n["metadata"]["name"] for n in listed["items"]] == ["team-a"]
    assert http.get("/api/v1/namespaces/team-a").body["kind"] == "Namespace"
    assert http.post("/api/v1/namespaces/nowhere/secrets", secret("s", "nowhere")).status == 404


def test_deleting_a_namespace_deletes_its_content(http: Http) -> None:
    http.post("/api/v1/namespaces", {"metadata": {"name": "gone"}})
    http.post("/api/v1/namespaces/gone/secrets", secret("s", "gone"))
    http.post(f"{APIKEYS}/namespaces/gone/apikeys",
              {**apikey("k", "gone"), "metadata": {"name": "k", "finalizers": ["x/y"]}})
    terminating = http.delete("/api/v1/namespaces/gone").body
    assert terminating["status"]["phase"] == "Terminating"
    assert http.get("/api/v1/namespaces/gone/secrets/s").status == 404
    assert http.post("/api/v1/namespaces/gone/secrets", secret("t", "gone")).status == 403
    http.patch(f"{APIKEYS}/namespaces/gone/apikeys/k", {"metadata": {"finalizers": None}})
    assert http.get("/api/v1/namespaces/gone").status == 404


def test_invalid_custom_resource_is_422_with_field_paths_and_not_created(http: Http) -> None:
    bad = apikey("bad", key={"length": 8, "encoding": "rot13", "prefix": "Bad-Prefix"})
    reply = http.post(KEYS, bad)
    assert reply.status == 422
    assert reply.body["reason"] == "Invalid"
    fields = {cause["field"] for cause in reply.body["details"]["causes"]}
    assert {"spec.key.length", "spec.key.encoding", "spec.key.prefix"} <= fields
    assert 'ApiKey.apikeys.dev "bad" is invalid' in reply.body["message"]
    assert "spec.key.length in body should be greater than or equal to 16" in reply.body[
        "message"]
    assert http.get(f"{KEYS}/bad").status == 404


def test_invalid_patch_is_422_and_changes_nothing(http: Http) -> None:
    http.post(KEYS, apikey("a"))
    reply = http.patch(f"{KEYS}/a", {"spec": {"deletionPolicy": "Sometimes"}})
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["field"] == "spec.deletionPolicy"
    assert http.get(f"{KEYS}/a").body["spec"]["deletionPolicy"] == "Delete"


def test_schema_defaults_are_applied_and_unknown_fields_pruned(http: Http) -> None:
    created = http.post(KEYS, apikey("a", unknown="dropped", key={"prefix": "ok_"})).body
    assert created["spec"]["key"] == {"length": 32, "encoding": "base62", "prefix": "ok_"}
    assert created["spec"]["store"] == "kubernetes"
    assert created["spec"]["secret"]["currentKey"] == "api-key"
    assert "unknown" not in created["spec"]
    status = http.patch(f"{KEYS}/a/status", {"status": {"kopf": {"progress": {"h": 1}},
                                                        "junk": 1}}).body
    assert status["status"] == {"kopf": {"progress": {"h": 1}}}


def test_strict_field_validation_refuses_unknown_fields(http: Http) -> None:
    body = apikey("a", unknown="x", key={"lenght": 3})
    reply = http.post(f"{KEYS}?fieldValidation=Strict", body)
    assert reply.status == 400
    assert 'unknown field "spec.unknown"' in reply.body["message"]
    assert 'unknown field "spec.key.lenght"' in reply.body["message"]
    http.post(KEYS, apikey("a"))
    status = http.patch(f"{KEYS}/a/status?fieldValidation=Strict",
                        {"status": {"kopf": {"free": 1}, "junk": 1}})
    assert status.status == 400
    assert 'unknown field "status.junk"' in status.body["message"]


def test_cluster_scoped_custom_resources(http: Http) -> None:
    body = {"apiVersion": "apikeys.dev/v1alpha1", "kind": "RotationPolicy",
            "metadata": {"name": "p"}, "spec": {"rotateEvery": "30d"}}
    created = http.post(f"{APIKEYS}/rotationpolicies", body)
    assert created.status == 201
    assert "namespace" not in created.body["metadata"]
    assert created.body["spec"]["gracePeriod"] == "24h"
    missing = http.post(f"{APIKEYS}/rotationpolicies",
                        {**body, "metadata": {"name": "q"}, "spec": {}})
    assert missing.status == 422
    assert missing.body["details"]["causes"][0]["field"] == "spec.rotateEvery"


def test_strategic_merge_and_apply_patches(http: Http) -> None:
    http.post(SECRETS, secret("s", data={"a": "YQ=="}))
    smp = http.patch(f"{SECRETS}/s", {"data": {"b": "Yg=="}}, patch_type="strategic").body
    assert smp["data"] == {"a": "YQ==", "b": "Yg=="}
    applied = http.patch(f"{SECRETS}/new?fieldManager=t", secret("new", data={"c": "Yw=="}),
                         patch_type="apply")
    assert applied.status == 201
    assert applied.body["data"] == {"c": "Yw=="}


def test_seeding_and_reading_from_the_test_thread(kube_api: EmulatorRunner, http: Http) -> None:
    kube_api.create_object({**apikey("seeded"), "status": {"storeRef": "kept"}})
    assert http.get(f"{KEYS}/seeded").body["status"] == {"storeRef": "kept"}
    got = kube_api.get_object("apikeys", "default", "seeded")
    assert got is not None and got["metadata"]["uid"]
    assert kube_api.get_object("apikeys", "default", "absent") is None
    assert [o["metadata"]["name"] for o in kube_api.list_objects("ak")] == ["seeded"]
    kube_api.patch_object("apikeys", "default", "seeded", {"spec": {"store": "vault"}})
    assert http.get(f"{KEYS}/seeded").body["spec"]["store"] == "vault"
    kube_api.delete_object("apikeys", "default", "seeded")
    assert http.get(f"{KEYS}/seeded").status == 404


def test_status_writes_are_validated_against_the_status_schema(http: Http) -> None:
    http.post(KEYS, apikey("a"))
    reply = http.patch(f"{KEYS}/a/status", {"status": {
        "currentKey": {"version": 0, "fingerprint": "sha256:nothex"},
        "conditions": [{"type": "Ready", "status": "Maybe"}]}})
    assert reply.status == 422
    fields = {cause["field"] for cause in reply.body["details"]["causes"]}
    assert {"status.currentKey.version", "status.currentKey.fingerprint",
            "status.conditions[0].status", "status.conditions[0].reason"} <= fields
    assert "status" not in http.get(f"{KEYS}/a").body


def test_crds_created_through_the_api_are_served_until_deleted(http: Http) -> None:
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.dev"},
           "spec": {"group": "example.dev", "scope": "Namespaced",
                    "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                        "openAPIV3Schema": {"type": "object", "properties": {
                            "spec": {"type": "object", "properties": {
                                "size": {"type": "integer", "maximum": 3}}}}}}}]}}
    assert http.post(crds, crd).status == 201
    widgets = "/apis/example.dev/v1/namespaces/default/widgets"
    assert http.post(widgets, {"apiVersion": "example.dev/v1", "kind": "Widget",
                               "metadata": {"name": "w"}, "spec": {"size": 2}}).status == 201
    assert http.post(widgets, {"apiVersion": "example.dev/v1", "kind": "Widget",
                               "metadata": {"name": "v"}, "spec": {"size": 9}}).status == 422
    assert http.get("/apis/example.dev/v1").status == 200
    assert http.delete(f"{crds}/widgets.example.dev").status == 200
    assert http.get("/apis/example.dev/v1").status == 404
    assert http.get(widgets).status == 404
    assert http.get(f"{crds}/apikeys.apikeys.dev").status == 200  # installed at start
