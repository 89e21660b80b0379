"""The servers `bench.frameworks` compares: how each is written, started, asked and answered.

Every app loads the same ONNX file into one `onnxruntime.InferenceSession` with one intra-op and one inter-op
thread (sequential execution, every graph optimisation), in one worker process or model replica, with no
access log and that framework's default batching. Each app is a file written into a temporary folder and run
by the framework's venv; none imports this project. Each server keeps the listeners it opens by default
(gRPC for this service, MLServer and KServe; MLServer's metrics port), on free ports; KServe binds all
interfaces (its REST server has no host setting), the others loopback. Each handler is written the way the
framework's docs write one (MLServer: `async def predict`; KServe: plain `def predict`, which it calls on
its event loop; LitServe: `predict` in its inference worker process; BentoML: a plain `def` API, which it
runs in a thread pool).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import numpy as np
import orjson

__all__ = ["FRAMEWORKS", "MODEL_NAME", "Framework", "Launch"]

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "digits-plain"
_SESSION = """\
import numpy as np
import onnxruntime as ort

def make_session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
"""

_MLSERVER = Template("""\
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from session import make_session, np


class OnnxEncoder(MLModel):
    async def load(self) -> bool:
        self._session = make_session($model)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        latent = self._session.run(["latent"], {"x": x})[0]  # (batch, 16)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("latent", latent)])
""")

_KSERVE = Template("""\
import logging

import kserve
from kserve import InferOutput, InferRequest, InferResponse
from kserve.utils.utils import generate_uuid

from session import make_session


class OnnxEncoder(kserve.Model):
    def __init__(self, name):
        super().__init__(name)
        self.load()

    def load(self):
        self._session = make_session($model)
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        latent = self._session.run(["latent"], {"x": x})[0]  # (batch, 16)
        output = InferOutput(name="latent", shape=list(latent.shape), datatype="FP32")
        output.set_data_from_numpy(latent, binary_data=False)
        response_id = payload.id or generate_uuid()
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=response_id)


if __name__ == "__main__":
    server = kserve.ModelServer()  # reads --http_port, --workers, ... and configures KServe's logging
    # No access log, and no per-request timing lines (KServe's trace logger), as for every server here.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start([OnnxEncoder($name)])
""")

_LITSERVE = Template("""\
import litserve as ls

from session import make_session, np


class OnnxEncoder(ls.LitAPI):
    def setup(self, device):
        self._session = make_session($model)

    def decode_request(self, request):
        return np.asarray(request["inputs"], dtype=np.float32)  # (batch, 64)

    def predict(self, x):
        return self._session.run(["latent"], {"x": x})[0]  # (batch, 16)

    def encode_response(self, output):
        return {"latent": output.tolist()}


if __name__ == "__main__":
    server = ls.LitServer(OnnxEncoder(), accelerator="cpu", devices=1, workers_per_device=1)
    server.run(
        host="127.0.0.1", port=$port, num_api_servers=1, log_level="warning", generate_client_file=False,
        access_log=False,
    )
""")

_BENTOML = Template("""\
import bentoml

from session import make_session, np


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class OnnxEncoder:
    def __init__(self):
        self._session = make_session($model)

    @bentoml.api
    def encode(self, inputs: list[list[float]]) -> list[list[float]]:
        x = np.asarray(inputs, dtype=np.float32)  # (batch, 64)
        return self._session.run(["latent"], {"x": x})[0].tolist()  # (batch, 16)
""")


@dataclass(frozen=True)
class Launch:
    """How to start one server: its command line, working folder and environment additions."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


Writer = Callable[[Path, Path, Path, Callable[[], int], int], Launch]
"""(folder, model file, venv bin folder, free_port, http port) -> Launch; writes the app into folder."""


@dataclass(frozen=True)
class Framework:
    """One way of serving the model, as the benchmark runs and reports it."""

    key: str
    label: str
    venv: str | None
    """The venv folder's name under --venvs; None: the project's own interpreter."""
    packages: tuple[str, ...]
    """The distributions whose versions the report gives."""
    batching: str
    """What its default batching is (the benchmark leaves it so)."""
    write: Writer
    ready_path: str
    infer_path: str
    body: Callable[[np.ndarray], bytes]
    """(batch, 64) float32 rows -> the request body."""
    answer: Callable[[bytes], np.ndarray]
    """The answer body -> (batch, 16) latents."""


def _with_session(folder: Path, app: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "session.py").write_text(_SESSION)
    (folder / app).write_text(text)


def _write_service(
    folder: Path, model: Path, bin_dir: Path, free_port: Callable[[], int], port: int
) -> Launch:
    # A repository of this one model (its version folder and metadata, as shipped).
    models = folder / "models"
    shutil.copytree(model.parents[1], models / MODEL_NAME)
    # gRPC on, as `python -m service` has it by default (and MLServer and KServe have theirs).
    argv = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
            "--grpc-port", str(free_port()), "--models", str(models), "--workers", "1",
            "--log-level", "warning"]  # fmt: skip
    return Launch(argv, ROOT, {"AE_INTRA_OP_THREADS": "1"})


def _mlserver_writer(parallel_workers: int | None) -> Writer:
    def write(folder: Path, model: Path, bin_dir: Path, free_port: Callable[[], int], port: int) -> Launch:
        _with_session(folder, "runtime.py", _MLSERVER.substitute(model=repr(str(model))))
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "debug": False,
        }
        if parallel_workers is not None:
            settings["parallel_workers"] = parallel_workers
        (folder / "settings.json").write_text(json.dumps(settings))
        model_settings = {"name": MODEL_NAME, "implementation": "runtime.OnnxEncoder"}
        (folder / "model-settings.json").write_text(json.dumps(model_settings))
        return Launch([str(bin_dir / "mlserver"), "start", str(folder)], folder)

    return write


def _write_kserve(
    folder: Path, model: Path, bin_dir: Path, free_port: Callable[[], int], port: int
) -> Launch:
    _with_session(folder, "app.py", _KSERVE.substitute(model=repr(str(model)), name=repr(MODEL_NAME)))
    argv = [str(bin_dir / "python"), "app.py", "--http_port", str(port), "--grpc_port", str(free_port()),
            "--workers", "1", "--enable_latency_logging", "false"]  # fmt: skip
    return Launch(argv, folder)


def _write_litserve(
    folder: Path, model: Path, bin_dir: Path, free_port: Callable[[], int], port: int
) -> Launch:
    _with_session(folder, "app.py", _LITSERVE.substitute(model=repr(str(model)), port=port))
    return Launch([str(bin_dir / "python"), "app.py"], folder)


def _write_bentoml(
    folder: Path, model: Path, bin_dir: Path, free_port: Callable[[], int], port: int
) -> Launch:
    _with_session(folder, "app.py", _BENTOML.substitute(model=repr(str(model))))
    argv = [str(bin_dir / "bentoml"), "serve", "app:OnnxEncoder", "--host", "127.0.0.1", "--port", str(port)]
    return Launch(argv, folder, {"BENTOML_DO_NOT_TRACK": "true"})


def _rows_body(rows: np.ndarray, **extra: str) -> bytes:
    return orjson.dumps({**extra, "inputs": rows.tolist()})


def _v2_body(rows: np.ndarray) -> bytes:
    tensor = {"name": "x", "datatype": "FP32", "shape": list(rows.shape), "data": rows.ravel().tolist()}
    return orjson.dumps({"inputs": [tensor]})


def _v2_answer(body: bytes) -> np.ndarray:
    outputs = {o["name"]: o for o in orjson.loads(body)["outputs"]}
    latent = outputs["latent"]
    return np.asarray(latent["data"], dtype=np.float32).reshape(latent["shape"])


def _key_answer(key: str) -> Callable[[bytes], np.ndarray]:
    def answer(body: bytes) -> np.ndarray:
        return np.asarray(orjson.loads(body)[key], dtype=np.float32)

    return answer


def _mlserver(key: str, label: str, parallel_workers: int | None) -> Framework:
    return Framework(
        key=key,
        label=label,
        venv="mlserver",
        packages=("mlserver", "fastapi", "uvicorn"),
        batching="adaptive batching off (max_batch_size 0, the default)",
        write=_mlserver_writer(parallel_workers),
        ready_path=f"/v2/models/{MODEL_NAME}/ready",
        infer_path=f"/v2/models/{MODEL_NAME}/infer",
        body=_v2_body,
        answer=_v2_answer,
    )


FRAMEWORKS: tuple[Framework, ...] = (
    Framework(
        key="service",
        label="this service (/encode)",
        venv=None,
        packages=("fastapi", "uvicorn", "orjson"),
        batching="micro-batching on (the default): concurrent requests coalesce into runs of up to 64 rows "
        "with no added wait; a request of 64 rows or more runs alone",
        write=_write_service,
        ready_path="/readyz",
        infer_path="/encode",
        body=lambda rows: _rows_body(rows, model=MODEL_NAME),
        answer=_key_answer("latents"),
    ),
    _mlserver("mlserver", "MLServer (defaults: parallel_workers 1)", None),
    _mlserver("mlserver-pw0", "MLServer (parallel_workers 0)", 0),
    Framework(
        key="kserve",
        label="KServe ModelServer (v2)",
        venv="kserve",
        packages=("kserve", "fastapi", "uvicorn"),
        batching="none (KServe's batcher is the agent sidecar, not part of the Python server)",
        write=_write_kserve,
        ready_path=f"/v2/models/{MODEL_NAME}/ready",
        infer_path=f"/v2/models/{MODEL_NAME}/infer",
        body=_v2_body,
        answer=_v2_answer,
    ),
    Framework(
        key="litserve",
        label="LitServe (LitAPI)",
        venv="litserve",
        packages=("litserve", "fastapi", "uvicorn"),
        batching="off (max_batch_size 1, the default)",
        write=_write_litserve,
        ready_path="/health",
        infer_path="/predict",
        body=_rows_body,
        answer=_key_answer("latent"),
    ),
    Framework(
        key="bentoml",
        label="BentoML (@bentoml.service)",
        venv="bentoml",
        packages=("bentoml", "starlette", "uvicorn"),
        batching="off (an API batches only when declared batchable=True)",
        write=_write_bentoml,
        ready_path="/readyz",
        infer_path="/encode",
        body=_rows_body,
        answer=lambda body: np.asarray(orjson.loads(body), dtype=np.float32),
    ),
)
"""Every framework, in the order each round runs them."""
