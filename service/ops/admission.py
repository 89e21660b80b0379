"""Admission: who may be worked on now. A FIFO gate with a bounded queue, a byte budget for bodies held in
memory, and one timer for every admitted request's deadline.

Per worker process, at most AE_MAX_CONCURRENCY requests are worked on at once, at most AE_MAX_QUEUE wait for
a slot, each for at most AE_QUEUE_TIMEOUT_S; beyond that a request is answered 503 with Retry-After at once,
so that overload sheds load instead of growing an unbounded queue or a storm of client timeouts. The body
budget (`ByteBudget`) bounds the request bodies held in memory at once (AE_MAX_BUFFERED_BYTES), and
`large_bodies` (a small gate of its own) how many big bodies are parsed at a time, since a parse holds the
event loop (see docs/reliability.md for the memory ceiling these give).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from service.errors import OverloadedError

__all__ = ["AdmissionGate", "ByteBudget", "Deadline", "RequestDeadlines"]


class AdmissionGate:
    """A FIFO semaphore with a bounded queue and a wait timeout; also tells when nothing is in flight."""

    def __init__(
        self, max_concurrency: int, max_queue: int, queue_timeout_s: float, retry_after_s: int = 1
    ) -> None:
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
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

    async def acquire(self, what: str = "request slot") -> None:
        """Take a slot, waiting in line if needed; OverloadedError when the line is full or too slow."""
        if self.try_acquire():
            return
        if len(self._waiters) >= self.max_queue:
            raise OverloadedError(
                f"server overloaded: {self.active} requests in progress and {len(self._waiters)} queued "
                f"(AE_MAX_CONCURRENCY={self.max_concurrency}, AE_MAX_QUEUE={self.max_queue}); retry later",
                self.retry_after_s,
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
                    f"server overloaded: no {what} became free within {self.queue_timeout_s:g} s "
                    f"(AE_QUEUE_TIMEOUT_S); retry later",
                    self.retry_after_s,
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


class ByteBudget:
    """At most `capacity` bytes reserved at once; reservations wait in FIFO order, each up to a timeout."""

    def __init__(self, capacity: int, timeout_s: float, retry_after_s: int = 1) -> None:
        self.capacity = capacity
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def reserve(self, size: int) -> int:
        """Reserve `size` bytes (capped at the capacity, so any one body can go through alone)."""
        size = min(size, self.capacity)
        if not self._waiters and self.used + size <= self.capacity:
            self.used += size
            return size
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.timeout_s):
                await waiter
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.done() and not waiter.cancelled():
                self.release(size)
            elif entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()
            if isinstance(exc, TimeoutError):
                raise OverloadedError(
                    f"server overloaded: {self.used} bytes of request bodies are held already "
                    f"(AE_MAX_BUFFERED_BYTES={self.capacity}); retry later",
                    self.retry_after_s,
                ) from None
            raise
        return size

    def release(self, size: int) -> None:
        self.used -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            size, waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += size
                waiter.set_result(None)


class Deadline:
    __slots__ = ("expired", "task", "when")

    def __init__(self, when: float, task: asyncio.Task[Any]) -> None:
        self.when = when
        self.task = task
        self.expired = False

    def ours(self) -> bool:
        """After a CancelledError: whether this deadline caused it (and nobody else cancelled the task)."""
        return self.expired and self.task.uncancel() == 0


class RequestDeadlines:
    """Cancels requests that run past `timeout_s`, with one loop timer for all of them.

    Every request has the same timeout, so deadlines arrive in order: an insertion-ordered dict holds the
    live ones and a single `call_at` timer waits for the oldest. Per request that is a dict insert and delete,
    where `asyncio.timeout` schedules and cancels a timer of its own (about 4 µs, measured)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._live: dict[Deadline, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> Deadline:
        """Watch the current task from now on."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        deadline = Deadline(loop.time() + self.timeout_s, task)
        self._live[deadline] = None
        if self._timer is None or self._loop is not loop:
            # A timer left on another (closed) loop, as under test clients, never fires: start afresh.
            self._loop = loop
            self._timer = loop.call_at(deadline.when, self._fire)
        return deadline

    def stop(self, deadline: Deadline) -> None:
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
