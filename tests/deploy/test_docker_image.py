"""The serving image: builds, serves the baked and a mounted model repository, has no torch, stops cleanly.

Needs a Docker engine: `DOCKER_HOST`, or a `docker` that answers `docker info`. CI (`.ci/run`) starts one and
sets AE_REQUIRE_DOCKER=1, so there a missing engine fails the test instead of skipping it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml  # type: ignore[import-untyped]

from service.contract import ModelMetadata
from tests.conftest import FIXTURE_MODELS, SHIPPED_MODELS
from tests.live import free_port, wait_ready
from tests.reference import fused_outputs

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "autoencoder-serving:test"
MAX_IMAGE_BYTES = 600 * 1024 * 1024

pytestmark = pytest.mark.timeout(600)


def _docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(
            f"docker {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-3000:]}"
        )
    return result


def _engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "no `docker` client on PATH"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if info.returncode != 0:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        return f"no Docker engine answers at {where}: {info.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="module")
def image() -> str:
    problem = _engine_problem()
    if problem is not None:
        if os.environ.get("AE_REQUIRE_DOCKER") == "1":
            pytest.fail(
                f"AE_REQUIRE_DOCKER=1 but {problem} (start one with ../shared/container-engine start)"
            )
        pytest.skip(f"{problem}; set AE_REQUIRE_DOCKER=1 to make this a failure")
    _docker("build", "--network", "host", "-q", "-t", IMAGE, str(ROOT), timeout=540)
    return IMAGE


def _run(image: str, port: int, *extra: str, command: list[str] | None = None) -> str:
    name = f"ae-test-{uuid.uuid4().hex[:10]}"
    command = command or [
        "python",
        "-m",
        "service",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--grpc-port",
        "0",
    ]
    _docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        *extra,
        image,
        *command,
    )
    return name


def _image_command(image: str, port: int, grpc_port: int) -> list[str]:
    """The image's own CMD, bound to 127.0.0.1:PORT and GRPC_PORT instead of 0.0.0.0:8000 and 8081 (host
    networking here)."""
    command: list[str] = json.loads(_docker("image", "inspect", image).stdout)[0]["Config"]["Cmd"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert (
        command[command.index("--port") + 1] == "8000" and command[command.index("--grpc-port") + 1] == "8081"
    )
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--port") + 1] = str(port)
    command[command.index("--grpc-port") + 1] = str(grpc_port)
    return command


def _wait(name: str, url: str) -> None:
    try:
        wait_ready(url, timeout=60)
    except BaseException:
        logs = _docker("logs", name, check=False)
        print(logs.stdout[-3000:], logs.stderr[-3000:])
        raise


def _post(url: str, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _get(url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
        assert response.status == 200
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _shipped_models() -> list[Path]:
    """`models/<name>/<latest version>` of every shipped model."""
    found = []
    for name_dir in sorted(p for p in SHIPPED_MODELS.iterdir() if p.is_dir()):
        versions = sorted(
            (p for p in name_dir.iterdir() if (p / "metadata.json").is_file()), key=lambda p: int(p.name)
        )
        if versions:
            found.append(versions[-1])
    return found


@pytest.fixture(scope="module")
def baked(image: str) -> Iterator[tuple[str, str]]:
    """A container serving the models baked into the image, on 127.0.0.1:PORT."""
    port = free_port()
    name = _run(image, port)
    try:
        _wait(name, f"http://127.0.0.1:{port}/readyz")
        yield name, f"http://127.0.0.1:{port}"
    finally:
        _docker("rm", "-f", name, check=False)


def _check_answers(base: str, directory: Path) -> None:
    meta = ModelMetadata.read(directory)
    x = np.random.default_rng(0).uniform(0.0, 10.0, (3, meta.input_dim)).astype(np.float32)  # (3, input_dim)
    expected = fused_outputs(directory, x)
    body = {"model": meta.name, "version": meta.version, "inputs": x.tolist()}
    encoded = _post(f"{base}/encode", body)
    assert (encoded["model"], encoded["version"]) == (meta.name, meta.version)
    np.testing.assert_allclose(np.array(encoded["latents"]), expected["latent"], rtol=1e-4, atol=1e-5)
    scored = _post(f"{base}/reconstruction-error", body)
    np.testing.assert_allclose(np.array(scored["errors"]), expected["error"], rtol=1e-4, atol=1e-6)
    assert len(scored["anomalies"]) == 3
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    v2 = _post(f"{base}/v2/models/{meta.name}/versions/{meta.version}/infer", {"inputs": [tensor]})
    outputs = {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in v2["outputs"]}
    np.testing.assert_allclose(outputs["reconstruction"], expected["reconstruction"], rtol=1e-4, atol=1e-5)


def test_image_serves_baked_models(baked: tuple[str, str]) -> None:
    _, base = baked
    shipped = _shipped_models()
    assert shipped, "models/ has no shipped model to bake into the image"
    assert _get(f"{base}/readyz")["models"] >= len(shipped)
    listed = {m["name"] for m in _get(f"{base}/models")["models"]}
    assert listed == {d.parent.name for d in shipped}
    _check_answers(base, shipped[0])


def test_image_serves_mounted_repository_read_only(image: str) -> None:
    port = free_port()
    name = _run(image, port, "-v", f"{FIXTURE_MODELS}:/srv/models:ro")
    try:
        _wait(name, f"http://127.0.0.1:{port}/readyz")
        base = f"http://127.0.0.1:{port}"
        assert {m["name"] for m in _get(f"{base}/models")["models"]} == {"tiny", "tiny-vae"}
        _check_answers(base, FIXTURE_MODELS / "tiny" / "2")
    finally:
        _docker("rm", "-f", name, check=False)


def test_image_has_no_torch_training_or_test_tools(image: str) -> None:
    for module in ["torch", "training", "pytest", "sklearn", "ray", "service.bulk"]:
        result = _docker(
            "run", "--rm", "--network", "host", image, "python", "-c", f"import {module}", check=False
        )
        assert result.returncode != 0, f"{module} imports inside the image"
        assert f"No module named '{module}'" in result.stderr, result.stderr[-500:]
    size = int(_docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip())
    print(f"image {image}: {size / 1e6:.0f} MB")
    assert size < MAX_IMAGE_BYTES, (
        f"image is {size / 1e6:.0f} MB; expected under {MAX_IMAGE_BYTES / 1e6:.0f} MB"
    )


def test_image_runs_as_non_root_with_healthcheck(image: str, baked: tuple[str, str]) -> None:
    config = json.loads(_docker("image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] not in ("", "root", "0")
    assert config["Env"] and "AE_MODELS_DIR=/srv/models" in config["Env"]
    assert "/usr/local/lib/ae-healthcheck.py" in " ".join(config["Healthcheck"]["Test"])
    assert config["Cmd"][:3] == ["python", "-m", "service"]
    name, _ = baked
    assert _docker("exec", name, "id", "-u").stdout.strip() == "10001"
    # The healthcheck finds the overridden port on PID 1's command line and probes /readyz.
    check = _docker("exec", name, "python", "/usr/local/lib/ae-healthcheck.py", check=False)
    assert check.returncode == 0, check.stderr


def _grpc_ready(port: int, model: str, metadata: tuple[tuple[str, str], ...] = ()) -> bool:
    """ServerReady and ModelReady over the image's gRPC port, as raw protobuf bytes: tritonclient's, KServe's
    and the service's generated modules all register the same `inference.*` names, so no two of them can be
    loaded in one test process."""
    import grpc

    name = model.encode()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:

        def call(method: str, body: bytes) -> bytes:
            stub = channel.unary_unary(f"/inference.GRPCInferenceService/{method}")
            return bytes(stub(body, metadata=metadata, timeout=10))

        # Each answer is field 1 (ready) = true; ModelReadyRequest carries the name as field 1.
        ready = b"\x08\x01"
        return (
            call("ServerReady", b"") == ready
            and call("ModelReady", b"\x0a" + bytes([len(name)]) + name) == ready
        )


def test_image_cmd_serves_and_stops_cleanly_on_sigterm(image: str) -> None:
    port, grpc_port = free_port(), free_port()
    name = _run(image, port, command=_image_command(image, port, grpc_port))
    try:
        _wait(name, f"http://127.0.0.1:{port}/readyz")
        assert _grpc_ready(grpc_port, "digits-plain")
        start = time.monotonic()
        _docker("stop", "-t", "20", name)
        took = time.monotonic() - start
        state = json.loads(_docker("inspect", name).stdout)[0]["State"]
        # SIGTERM reached the server (PID 1) and it shut down itself, well before docker's SIGKILL.
        assert state["ExitCode"] == 0, state
        assert took < 10, f"docker stop took {took:.1f} s"
        logs = _docker("logs", name).stderr
        assert "Shutting down" in logs or "Finished server process" in logs, logs[-1000:]
    finally:
        _docker("rm", "-f", name, check=False)


# --- KServe: the image as deploy/kserve/servingruntime.yaml runs it, on what storage initializers leave ---


def _kserve_container() -> dict[str, Any]:
    runtime = yaml.safe_load((ROOT / "deploy" / "kserve" / "servingruntime.yaml").read_text())
    container: dict[str, Any] = runtime["spec"]["containers"][0]
    return container


def _kserve_command(container: dict[str, Any], port: int, grpc_port: int) -> list[str]:
    """The runtime's command and args, bound to 127.0.0.1:PORT and GRPC_PORT (host networking here)."""
    command = [*container["command"], *container["args"]]
    for flag, value in [("--host", "127.0.0.1"), ("--port", str(port)), ("--grpc-port", str(grpc_port))]:
        command[command.index(flag) + 1] = value
    return command


@pytest.mark.parametrize("layout", ["version", "model", "repository"])
def test_image_serves_mnt_models_as_the_kserve_runtime_runs_it(
    image: str, tmp_path: Path, layout: str
) -> None:
    container = _kserve_container()
    env = {e["name"]: e["value"] for e in container["env"]}
    keys = tmp_path / "api-keys"
    keys.write_text("a-kserve-key\n")
    keys.chmod(0o644)
    # What a storageUri naming one version folder, one model's folder or the whole repository leaves there.
    source = {
        "version": SHIPPED_MODELS / "digits-plain" / "1",
        "model": SHIPPED_MODELS / "digits-plain",
        "repository": SHIPPED_MODELS,
    }[layout]
    security = container["securityContext"]
    port, grpc_port = free_port(), free_port()
    name = _run(
        image,
        port,
        *("-v", f"{source}:/mnt/models:ro", "-v", f"{keys}:{env['AE_API_KEYS_FILE']}:ro"),
        *(f"--env={k}={v}" for k, v in env.items()),
        *("--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--read-only", "--tmpfs", "/tmp"),
        command=_kserve_command(container, port, grpc_port),
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(name, base + container["readinessProbe"]["httpGet"]["path"])
        assert _get(base + container["livenessProbe"]["httpGet"]["path"])["status"] == "ok"
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get(f"{base}/v2/models/digits-plain")
        assert refused.value.code == 401
        auth = {"Authorization": "Bearer a-kserve-key"}
        listed = {m["name"] for m in _get(f"{base}/models", auth)["models"]}
        assert listed == (
            {"digits-plain"} if layout != "repository" else {d.parent.name for d in _shipped_models()}
        )
        directory = SHIPPED_MODELS / "digits-plain" / "1"
        x = np.random.default_rng(1).uniform(0.0, 16.0, (2, 64)).astype(np.float32)  # (2, input_dim)
        tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
        answer = _post(
            f"{base}/v2/models/digits-plain/infer", {"inputs": [tensor], "outputs": [{"name": "error"}]}, auth
        )
        np.testing.assert_allclose(
            answer["outputs"][0]["data"], fused_outputs(directory, x)["error"], rtol=1e-4
        )
        assert _grpc_ready(grpc_port, "digits-plain", (("authorization", "Bearer a-kserve-key"),))
    finally:
        _docker("rm", "-f", name, check=False)
