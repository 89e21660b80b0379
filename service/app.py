"""The app factory: `create_app(settings)` wires the routes, the error handler, metrics and the lifespan.

The lifespan loads the model repository (checked, warmed) and hands it to requests through lifespan state
(`request.state.ae`), never through module globals. Use with `uvicorn --factory service.app:create_app`.

One plain ASGI middleware (`FrontMiddleware`) does, in order: metrics (counts every answer, refusals
included), CORS (when configured, so preflights need no key), API keys (when any can be configured),
admission (concurrency limit, bounded queue, request timeout). In the
lifespan, SIGHUP reloads the models. Graceful shutdown under `python -m service` is uvicorn's: it stops
accepting, waits up to its timeout_graceful_shutdown for requests in flight, cancels the rest, and only then
runs the lifespan's shutdown. The lifespan still waits (up to AE_DRAIN_TIMEOUT_S) for admitted requests to
finish, for servers and in-process hosts that send the shutdown while requests are still running.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from service import __version__
from service.core.registry import ModelRegistry
from service.errors import ServiceError, error_response, service_error_handler, unexpected_error_handler
from service.ops.admission import AdmissionGate, FrontMiddleware
from service.ops.auth import SECURITY_SCHEME, ApiKeys, is_public_path
from service.ops.metrics import ServiceMetrics
from service.ops.reload import Reloader
from service.ops.reload import router as admin_router
from service.ops.threads import plan_threads
from service.protocols.rest import REQUEST_MODELS, AppState, router
from service.protocols.v2_http import router as v2_router
from service.settings import Settings

__all__ = ["UI_DIR", "create_app", "openapi_schema"]

logger = logging.getLogger(__name__)

UI_DIR = Path(__file__).resolve().parent / "ui"

_TAGS = [
    {"name": "inference", "description": "Encode, decode, reconstruct, score and sample with a model."},
    {"name": "models", "description": "The model repository: metadata, providers, calibration, load errors."},
    {"name": "health", "description": "Liveness, readiness, metrics and service metadata."},
    {"name": "admin", "description": "Operations: hot reload of the model repository."},
]
_DESCRIPTION = (
    "Autoencoders trained in PyTorch, exported to ONNX and served with ONNX Runtime. Tensor endpoints take "
    "JSON (a missing Content-Type is read as JSON), `application/x-npy`, or raw little-endian float32 "
    "(`application/octet-stream` with `X-Tensor-Shape: rows,cols`); binary bodies take their other fields "
    'from the query string. Answers follow Accept. Every error is `{"detail": "..."}`. '
    "When the server has API keys (AE_API_KEYS), send `Authorization: Bearer <key>`; the health probes, "
    "the UI and these docs are open."
)


async def _validation_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return error_response(422, "; ".join(parts))


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI schema, with the request models the tensor routes document but parse by hand."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    _, defs = models_json_schema(
        [(m, "validation") for m in REQUEST_MODELS], ref_template="#/components/schemas/{model}"
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in defs.get("$defs", {}).items():
        components.setdefault(name, definition)
    schema["components"]["schemas"] = dict(sorted(components.items()))
    schema["components"]["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from AE_API_KEYS or AE_API_KEYS_FILE; only needed when keys are set.",
        }
    }
    for path, operations in schema.get("paths", {}).items():
        if is_public_path(path):
            continue
        for operation in operations.values():
            operation["security"] = [{SECURITY_SCHEME: []}]
    app.openapi_schema = schema
    return schema


def _add_routes(app: FastAPI, *routers: APIRouter) -> None:
    """The routers' routes, in their order, first on the app's own router.

    `include_router` keeps each router as one entry that is matched twice per request (to choose it, then
    inside it), which cost 18 µs of the 150 µs a batch-1 answer took in all. The routers' own prefix and
    tags are already in their routes and nothing is added at inclusion, so the routes go in as they are
    (same paths, operation ids and OpenAPI entries; the tests compare the schema). They go ahead of
    FastAPI's docs routes, which share no path with them, so the tensor routes are matched soonest."""
    app.router.routes[0:0] = [route for router in routers for route in router.routes]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; models load when its lifespan starts."""
    settings = settings or Settings()
    metrics = ServiceMetrics()
    keys = ApiKeys(settings)
    gate = AdmissionGate(settings.max_concurrency, settings.max_queue, settings.queue_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        plan = plan_threads(settings.workers, settings.intra_op_threads)
        registry = ModelRegistry(
            settings.models_dir,
            providers=settings.providers,
            intra_op_threads=plan.intra_op_threads,
            inter_op_threads=plan.inter_op_threads,
            warm_up=settings.warm_up,
        )
        snapshot = registry.load()
        metrics.models_loaded.set(len(snapshot.all_models()))
        metrics.models_failed.set(len(snapshot.failures))
        logger.info(
            "loaded %d model versions (%d failed) from %s; thread plan %s",
            len(snapshot.all_models()),
            len(snapshot.failures),
            settings.models_dir,
            plan,
        )
        # Long-lived objects out of the collector's sight: full collections were 28-39 ms and hit p99.
        gc.collect()
        gc.freeze()
        if not keys.enabled:
            logger.warning("no API keys configured (AE_API_KEYS, AE_API_KEYS_FILE): every endpoint is open")
        reloader = Reloader(registry, keys, metrics)
        # Signal handlers can only be set from the main thread (not so under TestClient).
        on_main_thread = threading.current_thread() is threading.main_thread()
        if on_main_thread:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.on_sighup)
        try:
            yield {"ae": AppState(settings, registry, metrics, plan), "reloader": reloader}
        finally:
            if on_main_thread:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            # Under uvicorn nothing is left in flight by now (it drains and cancels before the lifespan
            # shutdown); the ASGI spec does not ask servers to, so wait for the ones that do not.
            if not await gate.drained(settings.drain_timeout_s):
                logger.warning("shutting down with %d requests still in flight", gate.active)
            gc.unfreeze()

    app = FastAPI(
        title="Autoencoder serving",
        version=__version__,
        description=_DESCRIPTION,
        openapi_tags=_TAGS,
        lifespan=lifespan,
    )
    _add_routes(app, router, v2_router, admin_router)
    app.add_exception_handler(ServiceError, service_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    cors = None
    if settings.cors_origins:
        cors = partial(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Tensor-Shape"],
            expose_headers=["X-Tensor-Shape", "X-Model", "X-Model-Version", "Retry-After"],
        )
    app.add_middleware(
        FrontMiddleware,
        metrics=metrics,
        gate=gate,
        settings=settings,
        # Without fixed keys or a keys file no reload can add one: skip the check entirely.
        keys=keys if keys.possible else None,
        cors=cors,
    )
    if UI_DIR.is_dir():
        app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/ui/")

    def _openapi() -> dict[str, Any]:
        return openapi_schema(app)

    app.openapi = _openapi  # type: ignore[method-assign]
    return app


def write_openapi(path: Path) -> None:
    """Write the app's OpenAPI schema (pretty, stable) to `path`."""
    schema = create_app(Settings()).openapi()
    path.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n")
