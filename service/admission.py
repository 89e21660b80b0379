"""Admission control: a concurrency limit with a bounded FIFO queue, fast 503s beyond it, request timeouts.

A plain ASGI middleware (an `@app.middleware("http")` decorator halved throughput in measurements). Per
worker process, at most AE_MAX_CONCURRENCY requests are worked on at once and at most AE_MAX_QUEUE wait for
a slot, each for at most AE_QUEUE_TIMEOUT_S. A request that finds the queue full, or waits too long, is
answered 503 with Retry-After at once, so overload sheds load instead of growing an unbounded queue or a
storm of client timeouts. An admitted request that runs past AE_REQUEST_TIMEOUT_S is cancelled and answered
504 (if its answer has not started). Health, readiness and metrics bypass all of this, so probes answer under
overload. The gate also counts requests in flight, so shutdown can wait for them to drain.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.settings import Settings

__all__ = ["AdmissionGate", "AdmissionMiddleware", "OverloadedError"]

logger = logging.getLogger(__name__)

_EXEMPT = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


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

    async def acquire(self) -> None:
        """Take a slot, waiting in line if needed; OverloadedError when the line is full or too slow."""
        if self.active < self.max_concurrency and not self._waiters:
            self.active += 1
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
            else:
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


class AdmissionMiddleware:
    """Applies an AdmissionGate and the request timeout to every request but the probes."""

    def __init__(self, app: ASGIApp, gate: AdmissionGate, settings: Settings) -> None:
        self.app = app
        self.gate = gate
        self.timeout_s = settings.request_timeout_s
        self.retry_after = str(settings.retry_after_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _EXEMPT:
            await self.app(scope, receive, send)
            return
        try:
            await self.gate.acquire()
        except OverloadedError as exc:
            await _answer(scope, send, 503, str(exc), [(b"retry-after", self.retry_after)])
            return
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if self.timeout_s is None:
                await self.app(scope, receive, send_wrapper)
                return
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.app(scope, receive, send_wrapper)
            except TimeoutError:
                logger.warning(
                    "%s %s cancelled after %g s (AE_REQUEST_TIMEOUT_S)",
                    scope["method"],
                    scope["path"],
                    self.timeout_s,
                )
                if started:
                    raise  # the answer is half sent: the server closes the connection
                await _answer(
                    scope,
                    send,
                    504,
                    f"the request took longer than {self.timeout_s:g} s (AE_REQUEST_TIMEOUT_S) and was "
                    "cancelled; retry with a smaller batch or later",
                    [],
                )
        finally:
            self.gate.release()


async def _answer(
    scope: Scope, send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]]
) -> None:
    key = "error" if scope["path"].startswith("/v2/") else "detail"
    body = orjson.dumps({key: message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
