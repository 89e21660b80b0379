"""The app factory: `create_app(settings)` wires the protocols, the core and the operations.

The lifespan loads the model repository (checked, warmed), builds the executor and the reloader, starts the
gRPC server when AE_GRPC_PORT is set, and hands all of it to requests through lifespan state
(`AppState` under `request.scope["state"]["ae"]`), never through module globals. Use with
`uvicorn --factory service.app:create_app`, or `python -m service`, which also sets the connection limits.

Errors: a `ServiceError` is answered in the protocol's shape of its path (REST `{"detail"}`, v2 `{"error"}`
with request errors as 400); routing's own 404 and 405 become the same errors; anything unexpected is logged
and answered 500 without internals. SIGHUP reloads the models. Graceful shutdown under `python -m service` is
uvicorn's (it stops accepting, waits up to its graceful timeout, then runs the lifespan's shutdown); the
lifespan also waits (up to AE_DRAIN_TIMEOUT_S) for admitted requests, for hosts that do not drain first,
and stops the gRPC server with the same grace.
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
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Match
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from service import __version__
from service.core.executor import Executor
from service.core.registry import ModelRegistry
from service.errors import (
    MethodNotAllowedError,
    NotFoundError,
    ServiceError,
    error_shape,
    render_error,
)
from service.ops.admission import AdmissionGate
from service.ops.auth import SECURITY_SCHEME, ApiKeys, is_public_path
from service.ops.front import FrontMiddleware
from service.ops.metrics import ServiceMetrics
from service.ops.reload import Reloader
from service.ops.threads import plan_threads
from service.protocols import rest, rest_models, v2_http
from service.settings import Settings
from service.state import STATE_KEY, AppState

__all__ = ["UI_DIR", "create_app", "write_openapi"]

logger = logging.getLogger(__name__)

UI_DIR = Path(__file__).resolve().parent / "ui"
DOCS_ASSETS = Path(str(files("fastapi_offline") / "static"))
"""Swagger UI and ReDoc, from the fastapi-offline package: /docs works with no internet."""

_TAGS = [
    {"name": "inference", "description": "Encode, decode, reconstruct, score and sample with a model."},
    {"name": "models", "description": "The model repository: metadata, providers, calibration, load errors."},
    {"name": "health", "description": "Liveness, readiness, metrics and service metadata."},
    {"name": "admin", "description": "Operations: hot reload of the model repository."},
    {"name": "v2", "description": "The Open Inference Protocol (KServe v2) over HTTP."},
]
_DESCRIPTION = (
    "Autoencoders trained in PyTorch, exported to ONNX and served with ONNX Runtime. Task routes take JSON "
    "(`inputs` arrays or named `records`; a missing Content-Type is read as JSON), `application/x-npy`, raw "
    "little-endian float32 (`application/octet-stream` with `X-Tensor-Shape`), CSV with a header, or PNG "
    "images; non-JSON bodies take their other fields from the query string. Answers follow Accept. Every "
    'error is `{"detail": "..."}` (`{"error": "..."}` under /v2). When the server has API keys, send '
    "`Authorization: Bearer <key>`; the health probes, the UI and these docs are open."
)


def _render(request: Request, exc: ServiceError) -> Response:
    if error_shape(request.url.path) == "error":
        return v2_http.render(exc)
    return render_error(exc)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return _render(request, exc)


async def _routing_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _render(request, NotFoundError("Not Found: no route for this path; see /docs"))
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowedError(
            f"Method Not Allowed; this path takes {allowed or 'other methods'}", dict(exc.headers or {})
        )
        return _render(request, error)
    return _render(request, ServiceError(str(exc.detail)))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    from service.errors import InvalidInputError

    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
    return _render(request, InvalidInputError("; ".join(parts)))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    """Last resort: log the bug, answer 500 in the same body shape without leaking internals."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return _render(request, ServiceError("internal server error; the failure was logged"))


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI schema, with the bearer scheme on every protected operation."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {})
    components["schemas"] = dict(sorted(components.get("schemas", {}).items()))
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from AE_API_KEYS or AE_API_KEYS_FILE; only needed when keys are set.",
        }
    }
    for path, operations in schema.get("paths", {}).items():
        if not is_public_path(path):
            for operation in operations.values():
                operation["security"] = [{SECURITY_SCHEME: []}]
    app.openapi_schema = schema
    return schema


def _route_label(app: FastAPI) -> Any:
    """The route template a request was for, found by matching (only for requests refused before routing)."""

    def label(scope: Scope) -> str:
        for route in app.router.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return str(getattr(route, "path", "unmatched"))
        return "unmatched"

    return label


@asynccontextmanager
async def _lifespan(
    app: FastAPI, settings: Settings, keys: ApiKeys, metrics: ServiceMetrics, gate: AdmissionGate
) -> AsyncIterator[dict[str, Any]]:
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
    if not keys.configured:
        logger.warning(
            "no API keys configured (AE_API_KEYS, AE_API_KEYS_FILE): every endpoint is open%s",
            "" if settings.admin_open else " but the admin routes, which refuse",
        )
    reloader = Reloader(registry, keys, metrics, settings.reload_min_interval_s)
    state = AppState(settings, registry, Executor(settings, metrics), metrics, plan, keys, reloader)
    grpc_server = None
    if settings.grpc_port:
        from service.protocols.v2_grpc import start_grpc

        grpc_server = await start_grpc(state, gate, settings.grpc_host, settings.grpc_port)
    # Long-lived objects out of the collector's sight: full collections were 28-39 ms and hit p99.
    gc.collect()
    gc.freeze()
    on_main_thread = threading.current_thread() is threading.main_thread()  # not so under TestClient
    if on_main_thread:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.on_sighup)
    try:
        yield {STATE_KEY: state}
    finally:
        if on_main_thread:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if grpc_server is not None:
            await grpc_server.stop(settings.drain_timeout_s)
        # Under uvicorn nothing is left in flight by now (it drains and cancels before the lifespan
        # shutdown); the ASGI spec does not ask servers to, so wait for the ones that do not.
        if not await gate.drained(settings.drain_timeout_s):
            logger.warning("shutting down with %d requests still in flight", gate.active)
        gc.unfreeze()


def _add_docs(app: FastAPI) -> None:
    app.mount("/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} - API",
            redoc_js_url="/docs/assets/redoc.standalone.js",
            redoc_favicon_url="/docs/assets/favicon.png",
            with_google_fonts=False,
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; models load when its lifespan starts."""
    settings = settings or Settings()
    metrics = ServiceMetrics()
    keys = ApiKeys(settings)
    gate = AdmissionGate(
        settings.max_concurrency, settings.max_queue, settings.queue_timeout_s, settings.retry_after_s
    )
    app = FastAPI(
        title="Autoencoder serving",
        version=__version__,
        description=_DESCRIPTION,
        openapi_tags=_TAGS,
        lifespan=lambda app: _lifespan(app, settings, keys, metrics, gate),
        docs_url=None,
        redoc_url=None,
        telemetry=None if settings.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    # The task routes first: they are matched soonest (each route tried costs every request).
    app.router.routes[0:0] = [*rest.router.routes, *v2_http.router.routes, *rest_models.router.routes]
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(HTTPException, _routing_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)
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
        keys=keys,
        route_label=_route_label(app),
        cors=cors,
    )
    _add_docs(app)
    if UI_DIR.is_dir():
        app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/ui/")

    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
    return app


def write_openapi(path: Path) -> None:
    """Write the app's OpenAPI schema (pretty, stable) to `path`."""
    schema = create_app(Settings()).openapi()
    path.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n")
