"""The two comparison servers: app factories for `uvicorn --factory`, configured by environment variables.

- `create_floor_app`: the same framework and server, one POST endpoint that reads the whole body and answers
  a prepared body of the same size as the service's answer (no parsing, no model): what HTTP alone costs.
- `create_naive_app`: what a user would write first: a pydantic `list[list[float]]` body, `response_model`,
  and the model in torch eager. It is given two advantages a naive user might not take: `async def` (no
  threadpool hop) and one torch thread per process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.responses import Response

__all__ = ["ANSWERS_ENV", "CASE_HEADER", "MODELS_ENV", "create_floor_app", "create_naive_app"]

ANSWERS_ENV = "BENCH_ANSWERS_DIR"
MODELS_ENV = "BENCH_MODELS_DIR"
CASE_HEADER = "X-Bench-Case"
"""Names the scenario, so the floor answers with the body the service gave for the same request."""


def create_floor_app() -> FastAPI:
    """Read the body, answer the prepared same-size body for the case named in X-Bench-Case."""
    directory = Path(os.environ[ANSWERS_ENV])
    answers = {p.stem: (p.read_bytes(), p.with_suffix(".type").read_text()) for p in directory.glob("*.body")}
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/denoise")
    async def denoise(request: Request) -> Response:
        await request.body()
        body, media_type = answers[request.headers.get(CASE_HEADER, "")]
        return Response(body, media_type=media_type)

    return app


class DenoiseRequest(BaseModel):
    model: str
    version: int | None = None
    inputs: list[list[float]]


class DenoiseResponse(BaseModel):
    model: str
    version: int
    outputs: list[list[float]]


def create_naive_app() -> FastAPI:
    """FastAPI + pydantic + torch eager, on every model of the repository in BENCH_MODELS_DIR."""
    import torch

    from bench.torch_graph import TorchGraph

    torch.set_num_threads(1)
    root = Path(os.environ[MODELS_ENV])
    models = {p.parent.name: TorchGraph(p / "model.onnx", "reconstruction") for p in root.glob("*/1")}
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/denoise", response_model=DenoiseResponse)
    async def denoise(body: DenoiseRequest) -> Any:
        x = torch.tensor(body.inputs, dtype=torch.float32)  # (batch, input_dim)
        outputs = models[body.model](x)  # (batch, input_dim)
        return {"model": body.model, "version": 1, "outputs": outputs.tolist()}

    return app
