"""`FrontMiddleware`: the one plain ASGI layer every HTTP request passes before a route.

In order: count and time the request (refusals included, labelled by the route they were for), CORS (when
configured, so that preflights need no key), API keys (`service.ops.auth`), the body (read whole within its
time and memory budget, `service.ops.body`, before the request holds any slot), a large-body slot for big
bodies (their parse holds the event loop), an admission slot (`service.ops.admission`), and the request
deadline (504 past AE_REQUEST_TIMEOUT_S). Probes and /metrics skip the body, slots and deadline, so they
answer under overload. Every refusal is a `ServiceError`, answered in the path's error shape. An
`@app.middleware("http")` decorator halved throughput in measurements: each layer costs every request, so
this is one object. A client that disconnects before its body has arrived is counted as status 499.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import DeadlineExceededError, ServiceError, send_error
from service.ops.admission import AdmissionGate, ByteBudget, RequestDeadlines
from service.ops.auth import PROBE_PATHS, ApiKeys, is_public_path
from service.ops.body import BODY_KEY, BodyReader, replay
from service.ops.metrics import MODEL_SCOPE_KEY, ServiceMetrics
from service.settings import Settings

__all__ = ["LARGE_BODY_BYTES", "FrontMiddleware"]

logger = logging.getLogger(__name__)

LARGE_BODY_BYTES = 1024 * 1024
"""Bodies above this size take one of the few large-body slots while they are parsed and run."""
_LARGE_BODY_SLOTS = 2

_EXEMPT = PROBE_PATHS | {"/metrics"}
_ANSWER_KEY = "ae.answer"


class _AnswerStatus:
    """A `send` that remembers the answer's status (0 until the answer starts)."""

    __slots__ = ("send", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class FrontMiddleware:
    """Metrics, CORS, API keys, the body, admission and the deadline, in one ASGI layer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        gate: AdmissionGate,
        settings: Settings,
        keys: ApiKeys,
        route_label: Callable[[Scope], str],
        cors: Callable[[ASGIApp], ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.gate = gate
        self.keys = keys
        self.route_label = route_label
        self.public_metrics = settings.public_metrics
        self.timeout_s = settings.request_timeout_s
        self.deadlines = None if self.timeout_s is None else RequestDeadlines(self.timeout_s)
        budget = ByteBudget(settings.max_buffered_bytes, settings.queue_timeout_s, settings.retry_after_s)
        self.bodies = BodyReader(
            budget, settings.max_body_bytes, settings.body_timeout_s, settings.min_body_rate
        )
        self.large = AdmissionGate(
            _LARGE_BODY_SLOTS, settings.max_queue, settings.queue_timeout_s, settings.retry_after_s
        )
        self._inner: ASGIApp = self._guarded if cors is None else cors(self._guarded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        answer = _AnswerStatus(send)
        scope[_ANSWER_KEY] = answer
        try:
            await self._inner(scope, receive, answer)
        except ClientDisconnect:
            # The client went away before its body arrived: nobody to answer and nothing broken, so no
            # traceback, and counted as 499 (nginx's "client closed request"), not as a server error.
            logger.debug("%s %s: the client disconnected mid-request", scope["method"], scope["path"])
            answer.status = answer.status or 499
        finally:
            route = scope.get("route")
            # Route templates, not raw paths, keep the label set bounded.
            endpoint = getattr(route, "path", None) or self.route_label(scope)
            model = scope.get(MODEL_SCOPE_KEY, "")
            self.metrics.observe_request(endpoint, model, answer.status or 500, time.perf_counter() - start)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path in _EXEMPT and (path != "/metrics" or not self.keys.configured or self.public_metrics):
            await self.app(scope, receive, send)
            return
        reserved = 0
        held: list[AdmissionGate] = []
        try:
            if not is_public_path(path, self.public_metrics):
                refusal = self.keys.refusal(path, scope["headers"])
                if refusal is not None:
                    raise refusal
            if path in _EXEMPT:
                await self.app(scope, receive, send)
                return
            if scope["method"] == "POST":
                read = await self.bodies.read(scope, receive)
                reserved = read.reserved
                scope[BODY_KEY] = read.body
                receive = replay(read.body, receive)
                if len(read.body) > LARGE_BODY_BYTES:
                    await self.large.acquire("large-body slot")
                    held.append(self.large)
            if not self.gate.try_acquire():
                await self.gate.acquire()
            held.append(self.gate)
        except ServiceError as exc:
            for gate in held:
                gate.release()
            if reserved:
                self.bodies.budget.release(reserved)
            await send_error(scope, send, exc)
            return
        try:
            if self.deadlines is None:
                await self.app(scope, receive, send)
            else:
                await self._with_deadline(self.deadlines, scope, receive, send)
        finally:
            for gate in held:
                gate.release()
            if reserved:
                self.bodies.budget.release(reserved)

    async def _with_deadline(
        self, deadlines: RequestDeadlines, scope: Scope, receive: Receive, send: Send
    ) -> None:
        deadline = deadlines.start()
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if not deadline.ours():
                raise
            logger.warning(
                "%s %s cancelled after %g s (AE_REQUEST_TIMEOUT_S)",
                scope["method"],
                scope["path"],
                self.timeout_s,
            )
            if scope[_ANSWER_KEY].status:
                raise TimeoutError from None  # the answer is half sent: the server closes the connection
            await send_error(
                scope,
                send,
                DeadlineExceededError(
                    f"the request took longer than {self.timeout_s:g} s (AE_REQUEST_TIMEOUT_S) and was "
                    "cancelled; retry with a smaller batch or later"
                ),
            )
        finally:
            deadlines.stop(deadline)
