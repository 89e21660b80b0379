"""Admission control: a concurrency limit with a bounded FIFO queue, fast 503s beyond it, request timeouts.

Applied by `FrontMiddleware`, the one plain ASGI layer every request passes before a route (metrics, CORS,
API keys, admission: an `@app.middleware("http")` decorator halved throughput in measurements). Per
worker process, at most AE_MAX_CONCURRENCY requests are worked on at once and at most AE_MAX_QUEUE wait for
a slot, each for at most AE_QUEUE_TIMEOUT_S. A request that finds the queue full, or waits too long, is
answered 503 with Retry-After at once, so overload sheds load instead of growing an unbounded queue or a
storm of client timeouts. An admitted request that runs past AE_REQUEST_TIMEOUT_S is cancelled and answered
504 (if its answer has not started). Health, readiness and metrics bypass all of this, so probes answer under
overload. The gate also counts requests in flight, so a lifespan shutdown that arrives while some still
run (not so under uvicorn, which drains connections first) can wait for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import send_error
from service.ops.auth import PROBE_PATHS, ApiKeys, check_key, is_public_path, refuse
from service.ops.metrics import MODEL_SCOPE_KEY, ServiceMetrics
from service.settings import Settings

__all__ = ["AdmissionGate", "FrontMiddleware", "OverloadedError", "RequestDeadlines"]

logger = logging.getLogger(__name__)

_EXEMPT = PROBE_PATHS | {"/metrics"}
_ANSWER_KEY = "ae.answer"


class OverloadedError(Exception):
    """No slot is free and none became free in time, or the queue is full."""


class AdmissionGate:
    """A FIFO semaphore with a bounded queue and a wait timeout; also tells when nothing is in flight."""

    def __init__(self, max_concurrency: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle: asyncio.Event | None = None

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for one (no coroutine, no await)."""
        if self.active < self.max_concurrency and not self._waiters:
            self.active += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in line if needed; OverloadedError when the line is full or too slow."""
        if self.try_acquire():
            return
        if len(self._waiters) >= self.max_queue:
            raise OverloadedError(
                f"server overloaded: {self.active} requests in progress and {len(self._waiters)} queued "
                f"(AE_MAX_CONCURRENCY={self.max_concurrency}, AE_MAX_QUEUE={self.max_queue}); retry later"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                await waiter
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait ended: pass it on rather than leak it.
                self.release()
            elif waiter in self._waiters:
                # Still in line. A release() between the cancellation and now has dropped it already (and
                # passed the slot on past it), so then there is nothing to remove.
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise OverloadedError(
                    f"server overloaded: no request slot became free within {self.queue_timeout_s:g} s "
                    f"(AE_QUEUE_TIMEOUT_S); retry later"
                ) from None
            raise

    def release(self) -> None:
        """Give a slot back, handing it straight to the first waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter: `active` is unchanged
                return
        self.active -= 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    async def drained(self, timeout_s: float) -> bool:
        """Wait until no admitted request is in flight; False if some still were after `timeout_s`."""
        if self.active == 0:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        finally:
            self._idle = None
        return True


class _Deadline:
    __slots__ = ("expired", "task", "when")

    def __init__(self, when: float, task: asyncio.Task[Any]) -> None:
        self.when = when
        self.task = task
        self.expired = False


class RequestDeadlines:
    """Cancels requests that run past `timeout_s`, with one loop timer for all of them.

    Every request has the same timeout, so deadlines arrive in order: an insertion-ordered dict holds the
    live ones and a single `call_at` timer waits for the oldest. Per request that is a dict insert and delete,
    where `asyncio.timeout` schedules and cancels a timer of its own (about 4 µs, measured)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._live: dict[_Deadline, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> _Deadline:
        """Watch the current task from now on."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        deadline = _Deadline(loop.time() + self.timeout_s, task)
        self._live[deadline] = None
        if self._timer is None or self._loop is not loop:
            # A timer left on another (closed) loop, as under test clients, never fires: start afresh.
            self._loop = loop
            self._timer = loop.call_at(deadline.when, self._fire)
        return deadline

    def stop(self, deadline: _Deadline) -> None:
        self._live.pop(deadline, None)

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        # Loop timers may fire up to a millisecond early.
        now = loop.time() + 0.001
        for deadline in list(self._live):
            if deadline.when > now:
                self._timer = loop.call_at(deadline.when, self._fire)
                return
            del self._live[deadline]
            deadline.expired = True
            deadline.task.cancel()


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
    """Metrics, CORS (when configured), API keys (when any can exist) and admission, in one ASGI layer.

    Each layer of middleware costs every request a few microseconds, so what every request passes before a
    route is one object, in the order: count and time the request (refusals included), CORS (so preflights
    need no key), API keys, admission (concurrency limit, bounded queue, request timeout). Health, readiness
    and metrics skip admission; the public paths skip the key check. A client that disconnects before its
    body has arrived is counted as status 499 and not answered."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        gate: AdmissionGate,
        settings: Settings,
        keys: ApiKeys | None = None,
        cors: Callable[[ASGIApp], ASGIApp] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.gate = gate
        self.keys = keys
        self.public_metrics = settings.public_metrics
        self.timeout_s = settings.request_timeout_s
        self.deadlines = None if self.timeout_s is None else RequestDeadlines(self.timeout_s)
        self.retry_after = str(settings.retry_after_s).encode()
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
            endpoint = getattr(route, "path", None) or "unmatched"
            model = scope.get(MODEL_SCOPE_KEY, "")
            self.metrics.observe_request(endpoint, model, answer.status or 500, time.perf_counter() - start)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        keys = self.keys
        if keys is not None and keys.enabled and not is_public_path(path, self.public_metrics):
            refusal = check_key(scope, keys)
            if refusal is not None:
                await refuse(scope, send, *refusal)
                return
        if path in _EXEMPT:
            await self.app(scope, receive, send)
            return
        gate = self.gate
        if not gate.try_acquire():
            try:
                await gate.acquire()
            except OverloadedError as exc:
                await send_error(scope, send, 503, str(exc), [(b"retry-after", self.retry_after)])
                return
        try:
            if self.deadlines is None:
                await self.app(scope, receive, send)
            else:
                await self._with_deadline(self.deadlines, scope, receive, send)
        finally:
            gate.release()

    async def _with_deadline(
        self, deadlines: RequestDeadlines, scope: Scope, receive: Receive, send: Send
    ) -> None:
        deadline = deadlines.start()
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            # Ours only if the watchdog fired and nobody else cancelled the task as well.
            if not deadline.expired or deadline.task.uncancel() > 0:
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
                504,
                f"the request took longer than {self.timeout_s:g} s (AE_REQUEST_TIMEOUT_S) and was "
                "cancelled; retry with a smaller batch or later",
            )
        finally:
            deadlines.stop(deadline)
