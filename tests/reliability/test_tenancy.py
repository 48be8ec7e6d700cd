"""Tenancy: an ApiKey in one namespace never reads, overwrites, rotates or deletes what belongs
to another, whatever names the tenants choose, in every store.

The names are picked to collide under naive path joins: the same name in two
namespaces; `team` + `a-x` against `team-a` + `x` (equal if joined with `-`);
dotted names that embed another namespace; two 253-character names that differ
only in their last character (the built-in store must shorten them). Every key
must get an entry of its own, and acting on one tenant's key (rotate, revoke,
delete, Retain and re-create) must leave every other tenant's Secret and store
entry exactly as they were.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from apikey_operator import keys
from apikey_operator.testing.harness import APIKEYS, LocalCluster
from tests.integration.helpers import apikey
from tests.reliability.conftest import STORE_KINDS, StoreConfigFactory
from tests.support.faults_contract import StoreProbe, decoded_data

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LONG_A = ("a" * 63 + ".") * 3 + "a" * 61
LONG_B = LONG_A[:-1] + "b"
KEYS = [
    ("team-a", "billing"), ("team-b", "billing"),
    ("team", "a-x"), ("team-a", "x"),
    ("team-a", "team-b.billing"), ("team-b", "team-a.billing"),
    ("team-a", LONG_A), ("team-a", LONG_B), ("team-b", LONG_A),
]


def _fingerprint_of(cluster: LocalCluster, probe: StoreProbe, ns: str, name: str) -> Any:
    """Everything observable about one tenant's key: Secret version and content, store state."""
    body = cluster.apikey(ns, name) or {}
    secret = cluster.secret(ns, name) or {}
    uid = str((body.get("metadata") or {}).get("uid", ""))
    state = probe.state(ns, name, uid)
    return (secret.get("metadata", {}).get("resourceVersion"),
            tuple(sorted(decoded_data(secret).items())),
            tuple(sorted(state.valid_keys().items())), state.owner_uid)


@pytest.mark.parametrize("store_kind", STORE_KINDS)
def test_tenants_never_touch_each_others_keys(store_config: StoreConfigFactory,
                                              store_kind: str, tmp_path: pathlib.Path) -> None:
    name, config = store_config(store_kind)
    stores = {} if name == "kubernetes" else {name: config}
    with LocalCluster(stores=stores, namespaces=("team", "team-a", "team-b"),
                      workdir=tmp_path) as cluster:
        probe = StoreProbe(cluster.api, name, config)
        for ns, key_name in KEYS:
            cluster.apply(apikey(key_name, namespace=ns, store=name))
        for ns, key_name in KEYS:
            cluster.wait_ready(ns, key_name, timeout=30)

        # Every key has an entry of its own and a key of its own.
        locations = {(cluster.apikey(ns, n) or {})["status"]["storeRef"] for ns, n in KEYS}
        assert len(locations) == len(KEYS), locations
        projected = [decoded_data(cluster.secret(ns, n))["api-key"] for ns, n in KEYS]
        assert len(set(projected)) == len(KEYS)
        for (ns, key_name), key in zip(KEYS, projected, strict=True):
            uid = cluster.apikey(ns, key_name)["metadata"]["uid"]  # type: ignore[index]
            state = probe.state(ns, key_name, uid)
            assert state.owner_uid == uid
            assert state.current is not None and state.current.key == key

        def others_unchanged(actor: tuple[str, str], before: dict[tuple[str, str], Any]) -> None:
            for other in KEYS:
                if other != actor:
                    assert _fingerprint_of(cluster, probe, *other) == before[other], \
                        f"acting on {actor} changed {other}"

        def snapshot() -> dict[tuple[str, str], Any]:
            return {k: _fingerprint_of(cluster, probe, *k) for k in KEYS}

        # Rotate and revoke one tenant's key: nobody else's changes.
        actor = ("team-a", "billing")
        before = snapshot()
        cluster.annotate(*actor, {"apikeys.dev/rotate": "tenancy"})
        cluster.wait_for(lambda: (cluster.apikey(*actor) or {})["status"]["currentKey"]
                         ["version"] == 2, what="the rotation")
        cluster.annotate(*actor, {"apikeys.dev/revoke": "tenancy"})
        cluster.wait_for(lambda: (cluster.apikey(*actor) or {})["status"].get(
            "lastHandledRevoke") == "tenancy", what="the revoke")
        others_unchanged(actor, before)

        # The colliding-under-a-dash pair: rotating one leaves the other alone.
        actor = ("team", "a-x")
        before = snapshot()
        cluster.annotate(*actor, {"apikeys.dev/rotate": "tenancy"})
        cluster.wait_for(lambda: (cluster.apikey(*actor) or {})["status"]["currentKey"]
                         ["version"] == 2, what="the rotation")
        others_unchanged(actor, before)

        # A tenant naming its Secret after another tenant's store entry gets its own Secret.
        sneaky = "ak.team-a.billing" if name == "kubernetes" else "team-a-billing"
        before = snapshot()
        cluster.apply(apikey("sneaky", namespace="team-b", store=name,
                             secret={"name": sneaky}))
        cluster.wait_ready("team-b", "sneaky")
        assert cluster.secret("team-b", sneaky) is not None
        others_unchanged(("team-b", "sneaky"), before)

        # Deleting one tenant's key deletes only its entry.
        actor = ("team-b", LONG_A)
        before = snapshot()
        victim_uid = cluster.apikey(*actor)["metadata"]["uid"]  # type: ignore[index]
        cluster.api.delete_object(APIKEYS, *actor)
        cluster.wait_for(lambda: cluster.apikey(*actor) is None, what="the deletion")
        cluster.wait_for(lambda: not probe.state(*actor, victim_uid).exists,
                         what="the store entry to go")
        others_unchanged(actor, before)

        # Retain, then re-create under the same name: a new ApiKey (new uid) never adopts
        # or overwrites the retained entry.
        actor = ("team-a", "x")
        cluster.api.patch_object(APIKEYS, *actor, {"spec": {"deletionPolicy": "Retain"}})
        cluster.wait_ready(*actor)
        old_uid = cluster.apikey(*actor)["metadata"]["uid"]  # type: ignore[index]
        retained = probe.state(*actor, old_uid)
        cluster.api.delete_object(APIKEYS, *actor)
        cluster.wait_for(lambda: cluster.apikey(*actor) is None, what="the deletion")
        cluster.apply(apikey(actor[1], namespace=actor[0], store=name))
        cond = cluster.wait_reason(*actor, "StoreConflict", timeout=30)
        assert cond["status"] == "False"
        after = probe.state(*actor, old_uid)
        assert after.owner_uid == old_uid
        assert after.valid_keys() == retained.valid_keys()
        assert cluster.secret(*actor) is None or keys.fingerprint(
            decoded_data(cluster.secret(*actor)).get("api-key", "")) != keys.fingerprint(
            retained.current.key)  # type: ignore[union-attr]
        leaks = cluster.leaks()
        assert not leaks, f"keys leaked into logs, events, status or metadata: {leaks}"
