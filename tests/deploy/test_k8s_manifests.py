"""The Kubernetes manifests point at the service's real routes, port and thread plan."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from fastapi.testclient import TestClient

from service.app import create_app
from service.ops.threads import plan_threads
from service.settings import Settings
from tests.fixtures.make_models import FIXTURE_MODELS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
STARTED_MIB = 256
"""A worker's resident size with the shipped models loaded, rounded up (measured: docs/reliability.md)."""


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _base() -> dict[str, dict[str, Any]]:
    """The Kustomize base's resources by kind."""
    kustomization = _documents(K8S / "kustomization.yaml")[0]
    found: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for doc in _documents(K8S / resource):
            assert doc["kind"] not in found, f"two {doc['kind']} resources"
            found[doc["kind"]] = doc
    return found


@pytest.fixture(scope="module")
def base() -> dict[str, dict[str, Any]]:
    return _base()


@pytest.fixture(scope="module")
def container(base: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = base["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    spec: dict[str, Any] = containers[0]
    return spec


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings(models_dir=FIXTURE_MODELS))) as test_client:
        yield test_client


def _image_cmd() -> list[str]:
    match = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert match, "Dockerfile has no exec-form CMD"
    command: list[str] = json.loads(match.group(1))
    return command


def _flag(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in named, f"port {port!r} is not one of the container's named ports {named}"
    return int(named[port])


def _cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", [])}


def test_k8s_base_has_deployment_service_hpa(base: dict[str, dict[str, Any]]) -> None:
    assert {"Deployment", "Service", "HorizontalPodAutoscaler"} <= set(base)
    deployment = base["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert base["Service"]["spec"]["selector"].items() <= labels.items()
    target = base["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert (
        1
        <= base["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
        < base["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]
    )
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


@pytest.mark.parametrize(("probe", "path"), [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")])
def test_k8s_probes_hit_real_routes(
    container: dict[str, Any], client: TestClient, probe: str, path: str
) -> None:
    get = container[probe]["httpGet"]
    assert get["path"] == path
    paths = client.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = {path for path, operations in paths.items() if "get" in operations}
    for spec in (container[probe], container.get("startupProbe", container[probe])):
        assert spec["httpGet"]["path"] in routes, f"{spec['httpGet']['path']} is not a GET route of the app"
        assert client.get(spec["httpGet"]["path"]).status_code == 200
    assert _port_number(container, get["port"]) == int(_flag(_image_cmd(), "--port"))


def test_k8s_ports_match_the_image(base: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    port, grpc = int(_flag(_image_cmd(), "--port")), int(_flag(_image_cmd(), "--grpc-port"))
    assert _flag(_image_cmd(), "--host") == "0.0.0.0"
    for exposed in (port, grpc):
        assert re.search(rf"^EXPOSE {exposed}$", (ROOT / "Dockerfile").read_text(), re.M)
    assert [p["containerPort"] for p in container["ports"]] == [port, grpc]
    targets = {p["name"]: _port_number(container, p["targetPort"]) for p in base["Service"]["spec"]["ports"]}
    assert targets == {"http": port, "grpc": grpc}


def test_k8s_api_key_comes_from_a_generated_secret(
    base: dict[str, dict[str, Any]], container: dict[str, Any], tmp_path: Path
) -> None:
    kustomization = _documents(K8S / "kustomization.yaml")[0]
    generated = {g["name"]: g for g in kustomization["secretGenerator"]}
    secret = base["Deployment"]["spec"]["template"]["spec"]["volumes"]
    volume = next(v for v in secret if "secret" in v)
    assert volume["secret"]["secretName"] in generated
    assert generated[volume["secret"]["secretName"]]["files"] == ["api-keys=api-keys.txt"]
    assert "api-keys.txt" in (ROOT / ".gitignore").read_text()  # made at deploy time, never committed
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    item = volume["secret"]["items"][0]
    assert _env(container)["AE_API_KEYS_FILE"] == f"{mount['mountPath']}/{item['path']}"
    # What the service makes of that file: keys on, and with the file empty, refusal rather than openness.
    keys = tmp_path / "api-keys"
    keys.write_text("")
    with TestClient(create_app(Settings(models_dir=FIXTURE_MODELS, api_keys_file=keys))) as secured:
        assert secured.post("/admin/reload").status_code == 503
        assert secured.get("/readyz").status_code == 200


def test_k8s_memory_limit_covers_the_ceiling(container: dict[str, Any]) -> None:
    from service.ops.memory import memory_ceiling_mib

    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    env = {k: v for k, v in _env(container).items() if k.startswith("AE_")}
    settings = Settings(**{k.removeprefix("AE_").lower(): v for k, v in env.items() if k != "AE_MODELS_DIR"})
    # The shipped repository loads into well under STARTED_MIB (docs/reliability.md measures it).
    assert int(limit[:-2]) >= STARTED_MIB + memory_ceiling_mib(settings)


def test_k8s_prometheus_scrapes_the_metrics_route(
    base: dict[str, dict[str, Any]], container: dict[str, Any], client: TestClient
) -> None:
    annotations = base["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == _port_number(container, "http")
    response = client.get(annotations["prometheus.io/path"])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    monitor = _documents(K8S / "servicemonitor.yaml")[0]
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == annotations["prometheus.io/path"]
    assert endpoint["port"] in {p["name"] for p in base["Service"]["spec"]["ports"]}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= base["Service"]["metadata"]["labels"].items()


def test_k8s_resources_agree_with_the_thread_plan(container: dict[str, Any]) -> None:
    resources = container["resources"]
    cpu_limit = _cpus(resources["limits"]["cpu"])
    assert _cpus(resources["requests"]["cpu"]) <= cpu_limit
    assert {"memory"} <= resources["requests"].keys() and {"memory"} <= resources["limits"].keys()
    env = _env(container)
    workers, threads = int(env["AE_WORKERS"]), int(env["AE_INTRA_OP_THREADS"])
    # The service sees the CPU limit as its cgroup quota: the configured plan must survive it unclamped.
    plan = plan_threads(workers, threads, cpus=(math.ceil(cpu_limit), "cgroup quota"))
    assert (plan.workers, plan.intra_op_threads) == (workers, threads), plan.note
    assert workers * threads <= cpu_limit


def test_k8s_grace_period_covers_the_drain(
    base: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    drain = int(_flag(_image_cmd(), "--timeout-graceful-shutdown"))
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert base["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain + pause


def test_k8s_runs_as_the_image_user(base: dict[str, dict[str, Any]], container: dict[str, Any]) -> None:
    pod = base["Deployment"]["spec"]["template"]["spec"]["securityContext"]
    uid = re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid and pod["runAsNonRoot"] and pod["runAsUser"] == int(uid.group(1))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert _env(container)["AE_MODELS_DIR"] == "/srv/models"


def test_k8s_kustomize_lists_every_manifest_and_renders(tmp_path: Path) -> None:
    listed = set(_documents(K8S / "kustomization.yaml")[0]["resources"])
    # The ServiceMonitor needs the Prometheus Operator's CRD, so it is applied on its own.
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "servicemonitor.yaml"}
    assert listed == on_disk
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return  # the listing and every document's parse (the other tests) are what can be checked here
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("api-keys.txt"))
    # Without a key file there is nothing to deploy: the service never goes out without a key.
    refused = subprocess.run([kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "api-keys.txt" in refused.stderr
    (copy / "api-keys.txt").write_text("a-generated-key\n")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    documents = [d for d in yaml.safe_load_all(rendered) if d]
    assert sorted(d["kind"] for d in documents) == sorted([*_base(), "Secret"])
    secret = next(d for d in documents if d["kind"] == "Secret")
    import base64

    assert base64.b64decode(secret["data"]["api-keys"]).decode() == "a-generated-key\n"
