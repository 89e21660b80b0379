"""The KServe manifests are what KServe accepts (its Python SDK's models, read strictly) and point at the
image's real command, ports and routes; the service serves /mnt/models in both layouts KServe leaves there.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import kubernetes.client.models
import pytest
import yaml  # type: ignore[import-untyped]
from fastapi.testclient import TestClient

from service.app import create_app
from service.contract import SCHEMA_VERSION
from service.settings import Settings
from tests.conftest import SHIPPED_MODELS
from tests.deploy.test_k8s_manifests import _flag, _image_cmd


def _kserve_models() -> types.ModuleType:
    """The KServe SDK's resource models without running `kserve/__init__`, which loads KServe's gRPC modules:
    they register the Open Inference Protocol's protobuf names (`inference.*`), as tritonclient's gRPC client
    does, and the two cannot be loaded in one test session."""
    if "kserve" not in sys.modules:
        spec = importlib.util.find_spec("kserve")
        assert spec is not None and spec.submodule_search_locations, "the KServe SDK is not installed"
        package = types.ModuleType("kserve")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["kserve"] = package
    return importlib.import_module("kserve.models")


KSERVE_MODELS = _kserve_models()
ROOT = Path(__file__).resolve().parents[2]
KSERVE = ROOT / "deploy" / "kserve"
MANIFESTS = {
    "servingruntime.yaml": ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    "inferenceservice-model.yaml": ("serving.kserve.io/v1beta1", "InferenceService"),
    "inferenceservice-repository.yaml": ("serving.kserve.io/v1beta1", "InferenceService"),
}
"""Each manifest's apiVersion and kind; the SDK's model is V1<version><kind>."""
STORAGE_SCHEMES = ("gs", "s3", "pvc", "https", "http", "hdfs", "webhdfs", "oci", "hf", "azure")
"""The storageUri schemes KServe's storage initializer reads."""
_PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
}


def _document(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((KSERVE / name).read_text()) if d]
    assert len(documents) == 1, f"{name} holds {len(documents)} documents"
    document: dict[str, Any] = documents[0]
    return document


def _strict(data: Any, kind: str, where: str) -> Any:
    """`data` read as the SDK's model `kind`, refusing a field the model does not have (a typo KServe would
    drop silently) and a value of the wrong type; the models' own setters refuse missing required fields."""
    if kind in _PRIMITIVES:
        assert isinstance(data, _PRIMITIVES[kind]) and not (kind != "bool" and isinstance(data, bool)), (
            f"{where} is {data!r}; the SDK expects a {kind}"
        )
        return data
    if kind == "object":
        return data
    listed = re.fullmatch(r"[Ll]ist\[(.+)\]", kind)
    if listed:
        assert isinstance(data, list), f"{where} must be a list"
        return [_strict(item, listed.group(1), f"{where}[{i}]") for i, item in enumerate(data)]
    mapped = re.fullmatch(r"(?:dict\(str, (.+)\)|Dict\[str, (.+)\])", kind)
    if mapped:
        assert isinstance(data, dict), f"{where} must be a mapping"
        value_kind = mapped.group(1) or mapped.group(2)
        return {k: _strict(v, value_kind, f"{where}.{k}") for k, v in data.items()}
    model = getattr(KSERVE_MODELS, kind, None) or getattr(kubernetes.client.models, kind)
    assert isinstance(data, dict), f"{where} must be a mapping ({kind})"
    fields = {json_name: attr for attr, json_name in model.attribute_map.items()}
    unknown = sorted(set(data) - set(fields))
    assert not unknown, f"{where} has fields {unknown} that {kind} does not know"
    values = {fields[k]: _strict(v, model.openapi_types[fields[k]], f"{where}.{k}") for k, v in data.items()}
    return model(**values)


@pytest.fixture(scope="module")
def runtime() -> dict[str, Any]:
    return _document("servingruntime.yaml")


@pytest.fixture(scope="module")
def container(runtime: dict[str, Any]) -> dict[str, Any]:
    containers = runtime["spec"]["containers"]
    assert [c["name"] for c in containers] == ["kserve-container"], (
        "KServe runs the model in kserve-container"
    )
    spec: dict[str, Any] = containers[0]
    return spec


@pytest.mark.parametrize("name", MANIFESTS)
def test_kserve_manifests_are_what_the_sdk_models_accept(name: str) -> None:
    document = _document(name)
    api_version, kind = MANIFESTS[name]
    assert (document["apiVersion"], document["kind"]) == (api_version, kind)
    model = f"V1{api_version.split('/')[1].removeprefix('v1')}{kind}"
    built = _strict(document, model, name)
    assert built.metadata.name and built.spec is not None
    if kind == "ServingRuntime":
        # The same spec serves as a ClusterServingRuntime (the docs say how to offer it cluster-wide).
        _strict({**document, "kind": "ClusterServingRuntime"}, "V1alpha1ClusterServingRuntime", name)


def _broken(change: str) -> dict[str, Any]:
    document = copy.deepcopy(_document("servingruntime.yaml"))
    container = document["spec"]["containers"][0]
    if change == "typo":
        container["readinesProbe"] = container.pop("readinessProbe")
    elif change == "number-for-string":
        container["env"][0]["value"] = 1
    elif change == "no-containers":
        del document["spec"]["containers"]
    elif change == "port-without-number":
        del container["ports"][0]["containerPort"]
    return document


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("typo", "has fields ['readinesProbe'] that V1Container does not know"),
        ("number-for-string", "env[0].value is 1; the SDK expects a str"),
        ("no-containers", "Invalid value for `containers`, must not be `None`"),
        ("port-without-number", "validation error for V1ContainerPort\ncontainerPort\n  Field required"),
    ],
)
def test_kserve_strict_reading_refuses_what_kserve_would_not_take(change: str, error: str) -> None:
    with pytest.raises((AssertionError, ValueError)) as refused:
        _strict(_broken(change), "V1alpha1ServingRuntime", "servingruntime.yaml")
    assert error in str(refused.value)


def test_kserve_inference_services_ask_for_this_runtime_and_its_format(runtime: dict[str, Any]) -> None:
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert formats == {("autoencoder-serving", str(SCHEMA_VERSION))}, "the format is metadata.json's schema"
    assert set(runtime["spec"]["protocolVersions"]) == {"v2", "grpc-v2"}
    for name in ["inferenceservice-model.yaml", "inferenceservice-repository.yaml"]:
        service = _document(name)
        model = service["spec"]["predictor"]["model"]
        assert model["runtime"] == runtime["metadata"]["name"]
        assert (model["modelFormat"]["name"], model["modelFormat"]["version"]) in formats
        assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
        assert model["storageUri"].split("://")[0] in STORAGE_SCHEMES
        # Two container ports (HTTP and gRPC) are a RawDeployment's; Knative allows one.
        assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"


def test_kserve_runtime_runs_the_image_cmd_on_mnt_models(container: dict[str, Any]) -> None:
    assert container["command"] + container["args"] == [*_image_cmd(), "--models", "/mnt/models"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == f"autoencoder-serving:{version}"
    kustomization = _document("kustomization.yaml")
    assert kustomization["images"] == [{"name": "autoencoder-serving", "newTag": version}]


def test_kserve_runtime_ports_are_the_image_ports(container: dict[str, Any]) -> None:
    command = _image_cmd()
    http, grpc = int(_flag(command, "--port")), int(_flag(command, "--grpc-port"))
    for exposed in (http, grpc):
        assert re.search(rf"^EXPOSE {exposed}$", (ROOT / "Dockerfile").read_text(), re.M)
    # KServe's names: http1 for HTTP/1.1, h2c for gRPC; the first port is the predictor Service's port 80.
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http1", http), ("h2c", grpc)]


def _single_version(tmp_path: Path) -> Path:
    """What the storage initializer leaves for a storageUri naming one version folder."""
    target = tmp_path / "mnt-models"
    shutil.copytree(SHIPPED_MODELS / "digits-plain" / "1", target)
    return target


@pytest.mark.parametrize("layout", ["version", "repository"])
def test_kserve_probes_and_key_on_both_layouts_of_mnt_models(
    container: dict[str, Any], runtime: dict[str, Any], tmp_path: Path, layout: str
) -> None:
    models = _single_version(tmp_path) if layout == "version" else SHIPPED_MODELS
    env = {e["name"]: e["value"] for e in container["env"]}
    volume = next(v for v in runtime["spec"]["volumes"] if "secret" in v)
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert env["AE_API_KEYS_FILE"] == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
    generated = {g["name"]: g for g in _document("kustomization.yaml")["secretGenerator"]}
    assert generated[volume["secret"]["secretName"]]["files"] == ["api-keys=api-keys.txt"]
    assert "deploy/kserve/api-keys.txt" in (ROOT / ".gitignore").read_text().splitlines()
    keys = tmp_path / "api-keys"
    keys.write_text("a-kserve-key\n")
    settings = Settings(models_dir=models, api_keys_file=keys, workers=int(env["AE_WORKERS"]))
    with TestClient(create_app(settings)) as client:
        routes = {p for p, ops in client.app.openapi()["paths"].items() if "get" in ops}  # type: ignore[attr-defined]
        port = int(_flag(_image_cmd(), "--port"))
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] in routes and get["port"] == port
            assert client.get(get["path"]).status_code == 200, f"{probe} {get['path']} without a key"
        assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert client.get("/v2/models/digits-plain/ready").status_code == 401
        auth = {"Authorization": "Bearer a-kserve-key"}
        assert client.get("/v2/models/digits-plain/ready", headers=auth).status_code == 200
        listed = {m["name"] for m in client.get("/models", headers=auth).json()["models"]}
        shipped = {d.name for d in SHIPPED_MODELS.iterdir() if d.is_dir()}
        assert listed == ({"digits-plain"} if layout == "version" else shipped)
        # Rotation: the Secret's new lines reach the file, then the admin route (any current key) reads them.
        keys.write_text("a-rotated-key\n")
        assert client.post("/admin/reload").status_code == 401
        assert client.post("/admin/reload", headers=auth).json()["api_keys_error"] is None
        rotated = {"Authorization": "Bearer a-rotated-key"}
        assert client.get("/v2/models/digits-plain/ready", headers=rotated).status_code == 200
        assert client.get("/v2/models/digits-plain/ready", headers=auth).status_code == 403


def test_kserve_kustomization_lists_the_runtime_and_renders(tmp_path: Path) -> None:
    kustomization = _document("kustomization.yaml")
    assert kustomization["resources"] == ["servingruntime.yaml"]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return  # the listing and the documents' own checks (above) are what can be checked here
    copy = tmp_path / "kserve"
    shutil.copytree(KSERVE, copy, ignore=shutil.ignore_patterns("api-keys.txt"))
    (copy / "api-keys.txt").write_text("a-generated-key\n")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d) == ["Secret", "ServingRuntime"]
