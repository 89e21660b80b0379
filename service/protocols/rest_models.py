"""The REST routes about the service itself: the model repository, health, metrics, info and reload.

Readiness (`/readyz`) is open to everyone, so it names models and their states only; why a version failed is
in the log and in `/models` (behind the API key when keys are configured).
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from service import __version__
from service.contract import ModelMetadata
from service.core.registry import LoadFailure, RegistrySnapshot
from service.core.runtime import OnnxModel
from service.errors import ModelNotFoundError, NotReadyError
from service.ops.metrics import CONTENT_TYPE_LATEST
from service.ops.reload import signal_supervisor
from service.protocols.schemas import (
    ErrorResponse,
    HealthResponse,
    InfoResponse,
    ModelInfo,
    ModelListResponse,
    ModelVersionsResponse,
    ReadinessResponse,
)
from service.state import STATE_KEY, AppState

__all__ = ["ReloadFailure", "ReloadResponse", "router"]

router = APIRouter(generate_unique_id_function=lambda route: route.name)

_INFO_FIELDS = [
    "variant",
    "kind",
    "architecture",
    "input_dim",
    "latent_dim",
    "feature_names",
    "series",
    "image",
    "generative",
    "metrics",
    "scores",
    "default_score",
    "calibration",
    "data",
    "created_at",
]


def _state(request: Request) -> AppState:
    state: AppState = request.scope["state"][STATE_KEY]
    return state


def _described(meta: ModelMetadata | None) -> dict[str, Any]:
    if meta is None:
        return {}
    return {f: getattr(meta, f) for f in _INFO_FIELDS} | {"input_shape": meta.sample_shape}


def _model_info(model: OnnxModel) -> ModelInfo:
    meta = model.metadata
    return ModelInfo(
        name=meta.name,
        version=meta.version,
        status="ready",
        providers=model.providers["model"],
        **_described(meta),
    )


def _failure_info(failure: LoadFailure) -> ModelInfo:
    return ModelInfo(
        name=failure.name,
        version=failure.version,
        status="failed",
        error=failure.error,
        **_described(failure.metadata),
    )


def _all_infos(snapshot: RegistrySnapshot) -> list[ModelInfo]:
    infos = [_model_info(m) for m in snapshot.all_models()] + [_failure_info(f) for f in snapshot.failures]
    return sorted(infos, key=lambda i: (i.name, i.version or 0))


@router.get("/models", tags=["models"], response_model=ModelListResponse)
async def list_models(request: Request) -> ModelListResponse:
    """Every model version found: its metadata, providers and calibration, or why it failed to load."""
    return ModelListResponse(models=_all_infos(_state(request).registry.snapshot))


@router.get(
    "/models/{name}",
    tags=["models"],
    response_model=ModelVersionsResponse,
    responses={404: {"model": ErrorResponse, "description": "Unknown model."}},
)
async def get_model(name: str, request: Request) -> ModelVersionsResponse:
    """Every version of one model."""
    snapshot = _state(request).registry.snapshot  # one snapshot throughout, whatever a reload swaps in
    versions = [i for i in _all_infos(snapshot) if i.name == name]
    if not versions:
        available = ", ".join(snapshot.names()) or "none"
        raise ModelNotFoundError(f"unknown model {name!r}; available models: {available}")
    loaded = snapshot.versions(name)
    return ModelVersionsResponse(name=name, latest=max(loaded) if loaded else None, versions=versions)


@router.get("/healthz", tags=["health"], response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is alive."""
    return HealthResponse(status="ok")


@router.get(
    "/readyz",
    tags=["health"],
    response_model=ReadinessResponse,
    responses={
        503: {"model": ErrorResponse, "description": "Some model is not loaded or warmed; says which."}
    },
)
async def readyz(request: Request) -> ReadinessResponse:
    """Every model is loaded, warmed, and on the providers asked for (names and states only)."""
    snapshot = _state(request).registry.snapshot
    problems = snapshot.problems()
    if problems:
        raise NotReadyError("not ready: " + "; ".join(problems))
    return ReadinessResponse(status="ready", models=len(snapshot.all_models()))


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition.", "content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics."""
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/info", tags=["health"], response_model=InfoResponse)
async def info(request: Request) -> InfoResponse:
    """Service metadata: version, model repository, providers, thread plan, request limits."""
    state = _state(request)
    settings = state.settings
    return InfoResponse(
        version=__version__,
        models_dir=str(settings.models_dir),
        available_providers=ort.get_available_providers(),
        requested_providers=settings.providers,
        thread_plan=state.thread_plan.as_dict(),
        limits={
            "max_batch_rows": settings.max_batch_rows,
            "max_body_bytes": settings.max_body_bytes,
            "inline_max_rows": settings.inline_max_rows,
            "max_json_values": settings.max_json_values,
            "max_buffered_bytes": settings.max_buffered_bytes,
        },
    )


class ReloadFailure(BaseModel):
    model: str
    version: int | None
    error: str = Field(description="Why the version's files did not load.")


class ReloadResponse(BaseModel):
    added: list[str] = Field(description="Versions loaded for the first time, as `name/version`.")
    updated: list[str] = Field(description="Versions whose files changed and were loaded again.")
    removed: list[str] = Field(description="Versions no longer in the repository, no longer served.")
    unchanged: list[str] = Field(description="Versions whose files did not change (sessions reused).")
    kept: list[ReloadFailure] = Field(
        description="Versions whose new files failed to load or could not be read; their previous load "
        "keeps serving."
    )
    failed: list[ReloadFailure] = Field(description="Versions that failed to load and are not served.")
    repository_error: str | None = Field(
        default=None,
        description="Why the repository itself could not be read (missing, unreadable or suddenly empty); "
        "then every loaded version keeps serving and nothing was removed.",
    )
    api_keys_error: str | None = Field(
        default=None,
        description="Why the API keys now refuse every request (configured, but no usable key was read).",
    )
    workers_signalled: bool = Field(
        description="Whether the other server workers were told to reload too (several workers only)."
    )


def _failures(failures: list[LoadFailure]) -> list[ReloadFailure]:
    return [ReloadFailure(model=f.name, version=f.version, error=f.error) for f in failures]


@router.post(
    "/admin/reload",
    tags=["admin"],
    operation_id="admin_reload",
    response_model=ReloadResponse,
    responses={
        401: {"model": ErrorResponse, "description": "No API key (when keys are configured)."},
        403: {
            "model": ErrorResponse,
            "description": "A wrong API key, or no keys configured (AE_ADMIN_OPEN off).",
        },
    },
)
async def reload_models(request: Request) -> ReloadResponse:
    """Rescan the model repository and the API keys file, and swap the models atomically."""
    outcome = await _state(request).reloader.reload()
    report = outcome.report
    return ReloadResponse(
        added=report.added,
        updated=report.updated,
        removed=report.removed,
        unchanged=report.unchanged,
        kept=_failures(report.kept),
        failed=_failures(report.failed),
        repository_error=report.fault,
        api_keys_error=outcome.keys_error,
        workers_signalled=signal_supervisor(),
    )
