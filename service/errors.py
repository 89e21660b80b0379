"""The service's errors: one tree, each class carrying its HTTP status; each protocol renders them its way.

ServiceError (500)
├── BadRequestError (400)              malformed JSON, unreadable binary tensor, bad protocol fields
├── UnauthorizedError (401)            no API key, or an Authorization header that is not `Bearer <key>`
├── ForbiddenError (403)               a wrong API key; the admin routes while keys are off
├── NotFoundError (404)                no route for the path
│   └── ModelNotFoundError (404)       unknown model or version
├── MethodNotAllowedError (405)
├── NotAcceptableError (406)           Accept names no answer type the service can give
├── RequestTimeoutError (408)          the headers or the body did not arrive in time
├── PayloadTooLargeError (413)         body, batch or JSON value count over its limit
├── UnsupportedMediaTypeError (415)    Content-Type or Content-Encoding the route does not take
├── InvalidInputError (422)            wrong shape, ragged rows, empty batch, NaN, non-numbers, bad fields
│   └── NotGenerativeError (422)       /sample on a model that cannot generate
├── TooManyRequestsError (429)         reloads asked for faster than AE_RELOAD_MIN_INTERVAL_S
├── HeadersTooLargeError (431)         headers over AE_MAX_HEADER_BYTES or AE_MAX_HEADERS
├── UnavailableError (503)
│   ├── ModelUnavailableError          the model exists but failed to load
│   ├── NotReadyError                  readiness: some model is not loaded or warmed
│   ├── KeysUnavailableError           an API key source is configured but holds no usable key
│   └── OverloadedError                admission queue full or waited too long (Retry-After)
│       ├── BatchQueueFullError        the micro-batching queue holds AE_BATCH_QUEUE_ROWS rows already
│       └── BatchTimeoutError          a call waited in the micro-batching queue past AE_BATCH_TIMEOUT_S
└── DeadlineExceededError (504)        an admitted request ran past AE_REQUEST_TIMEOUT_S

REST answers `{"detail": "..."}` and the Open Inference Protocol (under /v2) `{"error": "..."}`
(`render_error`); gRPC maps the status to a gRPC code (`service.protocols.v2_grpc`). A message that quotes
the client's input quotes at most `QUOTE_CHARS` characters of it (`quote`).
"""

from __future__ import annotations

from typing import Literal

import orjson
from starlette.responses import Response
from starlette.types import Scope, Send

__all__ = [
    "QUOTE_CHARS",
    "BadRequestError",
    "BatchQueueFullError",
    "BatchTimeoutError",
    "DeadlineExceededError",
    "ErrorShape",
    "ForbiddenError",
    "HeadersTooLargeError",
    "InvalidInputError",
    "KeysUnavailableError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "NotAcceptableError",
    "NotFoundError",
    "NotGenerativeError",
    "NotReadyError",
    "OverloadedError",
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "ServiceError",
    "TooManyRequestsError",
    "UnauthorizedError",
    "UnavailableError",
    "UnsupportedMediaTypeError",
    "error_shape",
    "quote",
    "render_error",
    "send_error",
]

QUOTE_CHARS = 80
"""The most characters of a client's own input an error message repeats."""

ErrorShape = Literal["detail", "error"]


def quote(value: object) -> str:
    """`repr(value)`, cut to QUOTE_CHARS characters: error messages never echo a big input back whole."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 5] + "...'" + f" ({len(text)} chars)"


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


class UnauthorizedError(ServiceError):
    status_code = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"WWW-Authenticate": 'Bearer realm="autoencoder-serving"'})


class ForbiddenError(ServiceError):
    status_code = 403


class NotFoundError(ServiceError):
    status_code = 404


class ModelNotFoundError(NotFoundError):
    pass


class MethodNotAllowedError(ServiceError):
    status_code = 405


class NotAcceptableError(ServiceError):
    status_code = 406


class RequestTimeoutError(ServiceError):
    status_code = 408

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"Connection": "close"})


class PayloadTooLargeError(ServiceError):
    status_code = 413


class UnsupportedMediaTypeError(ServiceError):
    status_code = 415


class InvalidInputError(ServiceError):
    status_code = 422


class NotGenerativeError(InvalidInputError):
    pass


class TooManyRequestsError(ServiceError):
    status_code = 429


class HeadersTooLargeError(ServiceError):
    status_code = 431


class UnavailableError(ServiceError):
    status_code = 503


class ModelUnavailableError(UnavailableError):
    pass


class NotReadyError(UnavailableError):
    pass


class KeysUnavailableError(UnavailableError):
    pass


class OverloadedError(UnavailableError):
    """No capacity now: a queue is full or a request waited too long. Always carries Retry-After."""

    def __init__(self, detail: str, retry_after_s: int = 1) -> None:
        super().__init__(detail, {"Retry-After": str(retry_after_s)})


class BatchQueueFullError(OverloadedError):
    pass


class BatchTimeoutError(OverloadedError):
    pass


class DeadlineExceededError(ServiceError):
    status_code = 504


def error_shape(path: str) -> ErrorShape:
    """The error body's key for a request path: "error" under /v2 (the protocol's shape), else "detail"."""
    return "error" if path == "/v2" or path.startswith("/v2/") else "detail"


def render_error(exc: ServiceError, shape: ErrorShape = "detail") -> Response:
    """An HTTP answer for `exc`: its status, its headers and `{shape: detail}`."""
    return Response(
        orjson.dumps({shape: exc.detail}),
        status_code=exc.status_code,
        media_type="application/json",
        headers=exc.headers,
    )


async def send_error(scope: Scope, send: Send, exc: ServiceError) -> None:
    """Answer at the ASGI level (before or instead of a route), in the request path's error shape."""
    body = orjson.dumps({error_shape(scope["path"]): exc.detail})
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    head += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": head})
    await send({"type": "http.response.body", "body": body})
