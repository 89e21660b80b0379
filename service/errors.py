"""The service's errors. Each carries its HTTP status; one handler turns any of them into `{"detail": ...}`.

ServiceError (500)
├── BadRequestError (400)          malformed JSON, unreadable binary tensor
├── ModelNotFoundError (404)       unknown model or version
├── NotAcceptableError (406)       Accept names no answer type the service can give
├── PayloadTooLargeError (413)     body over AE_MAX_BODY_BYTES, batch over AE_MAX_BATCH_ROWS
├── UnsupportedMediaTypeError (415)
├── InvalidInputError (422)        wrong shape, ragged rows, empty batch, NaN, non-numbers, bad fields
│   └── NotGenerativeError (422)   /sample on a model that cannot generate
├── ModelUnavailableError (503)    the model exists but failed to load
├── NotReadyError (503)            /readyz: some model is not loaded or warmed
├── BatchQueueFullError (503)      the micro-batching queue is full (with Retry-After)
└── BatchTimeoutError (503)        a call waited in the micro-batching queue past AE_BATCH_TIMEOUT_S

Answers written before any route runs (API keys, admission) use `send_error`, in the same shape: `{"detail":
...}`, or `{"error": ...}` under /v2, as the Open Inference Protocol has it.
"""

from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope, Send

__all__ = [
    "BadRequestError",
    "BatchQueueFullError",
    "BatchTimeoutError",
    "InvalidInputError",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "NotAcceptableError",
    "NotGenerativeError",
    "NotReadyError",
    "PayloadTooLargeError",
    "ServiceError",
    "UnsupportedMediaTypeError",
    "error_key",
    "error_response",
    "send_error",
    "service_error_handler",
    "unexpected_error_handler",
]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base of every error answered on purpose; `detail` says what was wrong and what was expected."""

    status_code = 500

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        """Extra answer headers, e.g. Retry-After on a 503."""


class BadRequestError(ServiceError):
    status_code = 400


class ModelNotFoundError(ServiceError):
    status_code = 404


class NotAcceptableError(ServiceError):
    status_code = 406


class PayloadTooLargeError(ServiceError):
    status_code = 413


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415


class InvalidInputError(ServiceError):
    status_code = 422


class NotGenerativeError(InvalidInputError):
    pass


class ModelUnavailableError(ServiceError):
    status_code = 503


class NotReadyError(ServiceError):
    status_code = 503


class BatchQueueFullError(ServiceError):
    status_code = 503


class BatchTimeoutError(ServiceError):
    status_code = 503


def error_response(status_code: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    """The one error body shape: `{"detail": "..."}`."""
    return Response(
        orjson.dumps({"detail": detail}),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def error_key(path: str) -> str:
    """The error body's key for a request path: "error" for the v2 protocol's routes, else "detail"."""
    return "error" if path == "/v2" or path.startswith("/v2/") else "detail"


async def send_error(
    scope: Scope, send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer a request at the ASGI level (before any route runs) with an error body in the path's shape."""
    body = orjson.dumps({error_key(scope["path"]): message})
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def service_error_handler(request: Request, exc: Exception) -> Response:
    """Answer a ServiceError with its status and detail."""
    assert isinstance(exc, ServiceError)
    return error_response(exc.status_code, exc.detail, exc.headers)


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    """Last resort: log the bug, answer 500 in the same body shape without leaking internals."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error; the failure was logged")
