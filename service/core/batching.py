"""Micro-batching as an opt-in wrapper: concurrent calls of one model operation coalesce into one run.

The model never knows. A `MicroBatcher` holds a row-wise function `x (rows, width) -> tuple of (rows, ...)
arrays` and splits each run's answer back by rows, so every caller gets exactly what an unbatched call on its
own rows would give. `BatcherPool` keeps one batcher per (model version, operation).

When a run starts: by default with no added wait. A call queues its rows and schedules a flush with
`call_soon`; the flush runs after every request already readable on the event loop has queued, which is what
piled up while the model (or the previous run) was busy. A fixed wait (`max_wait_s`) is possible, but the
loop's timers have about 1 ms resolution, so it mostly adds dead time (see PERFORMANCE.md).

Limits: a run takes at most `max_rows` rows (a call bigger than that runs on its own); at most `queue_rows`
rows may wait, one more call is refused at once; a call still waiting when its
`timeout_s` has passed is refused instead of being run. Runs of up to
`inline_max_rows` rows execute on the event loop (cheaper for sub-millisecond models); bigger ones on a
worker thread, while new calls keep queueing.

Both refusals are `OverloadedError` (503 with Retry-After): the queue holds `queue_rows` rows already, or
the call waited in the queue past its deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.core.runtime import Float32Array, OnnxModel
from service.errors import BatchQueueFullError, BatchTimeoutError, ModelUnavailableError

__all__ = [
    "BatchFn",
    "BatchLimits",
    "BatchQueueFullError",
    "BatchTimeoutError",
    "BatcherPool",
    "MicroBatcher",
    "Rows",
    "RunObserver",
]

Rows = tuple[np.ndarray[Any, Any] | None, ...]
"""A row-wise function's answer: arrays whose first axis is the batch, or None for an absent output."""
BatchFn = Callable[[Float32Array], Rows]
RunObserver = Callable[[int, float], None]
"""Called after each run with (rows, seconds)."""


@dataclass
class _Waiting:
    x: Float32Array  # (rows, width)
    future: asyncio.Future[Rows]
    deadline: float
    """Event-loop time after which the call is refused rather than run."""
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = int(self.x.shape[0])


class MicroBatcher:
    """Coalesces concurrent calls of one row-wise function into single runs."""

    def __init__(
        self,
        fn: BatchFn,
        *,
        max_rows: int = 64,
        max_wait_s: float = 0.0,
        queue_rows: int = 4096,
        timeout_s: float | None = None,
        inline_max_rows: int = 128,
        retry_after_s: int = 1,
        on_run: RunObserver | None = None,
    ) -> None:
        self.fn = fn
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.queue_rows = queue_rows
        self.timeout_s = timeout_s
        self.inline_max_rows = inline_max_rows
        self.retry_after_s = retry_after_s
        self.on_run = on_run
        self.runs = 0
        """Runs so far (each one model call)."""
        self._queue: deque[_Waiting] = deque()
        self._queued_rows = 0
        self._scheduled: asyncio.Handle | None = None
        self._busy = False

    async def submit(self, x: Float32Array) -> Rows:
        """Run `fn` on `x` (rows, width), coalesced with whatever else is queued; answer this call's rows."""
        rows = int(x.shape[0])
        if rows >= self.max_rows:
            return await self._alone(x)
        if self._queued_rows + rows > self.queue_rows:
            raise BatchQueueFullError(
                f"the batching queue is full ({self._queued_rows} rows waiting, limit {self.queue_rows}: "
                "AE_BATCH_QUEUE_ROWS); retry later",
                self.retry_after_s,
            )
        loop = asyncio.get_running_loop()
        deadline = math.inf if self.timeout_s is None else loop.time() + self.timeout_s
        waiting = _Waiting(x, loop.create_future(), deadline)
        self._queue.append(waiting)
        self._queued_rows += rows
        self._schedule(loop)
        return await waiting.future

    async def _alone(self, x: Float32Array) -> Rows:
        if x.shape[0] <= self.inline_max_rows:
            return self._timed(x)
        return await asyncio.get_running_loop().run_in_executor(None, self._timed, x)

    def _timed(self, x: Float32Array) -> Rows:
        start = time.perf_counter()
        out = self.fn(x)
        self.runs += 1
        if self.on_run is not None:
            self.on_run(int(x.shape[0]), time.perf_counter() - start)
        return out

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._busy:
            return  # the run in flight flushes again when it ends
        full = self._queued_rows >= self.max_rows
        if self._scheduled is not None:
            if not (full and isinstance(self._scheduled, asyncio.TimerHandle)):
                return
            self._scheduled.cancel()
        if self.max_wait_s > 0 and not full:
            self._scheduled = loop.call_later(self.max_wait_s, self._flush)
        else:
            self._scheduled = loop.call_soon(self._flush)

    def _take(self, now: float) -> list[_Waiting]:
        """Up to max_rows rows from the front of the queue, answering expired and dropping cancelled calls."""
        batch: list[_Waiting] = []
        rows = 0
        while self._queue and rows + self._queue[0].rows <= self.max_rows:
            waiting = self._queue.popleft()
            self._queued_rows -= waiting.rows
            if waiting.future.done():
                continue  # the caller went away
            if now > waiting.deadline:
                waiting.future.set_exception(
                    BatchTimeoutError(
                        f"the request waited over {self.timeout_s:g} s in the batching queue "
                        "(AE_BATCH_TIMEOUT_S) without being run; retry later",
                        self.retry_after_s,
                    )
                )
                continue
            batch.append(waiting)
            rows += waiting.rows
        return batch

    def _flush(self) -> None:
        self._scheduled = None
        loop = asyncio.get_running_loop()
        batch = self._take(loop.time())
        if not batch:
            if self._queue:
                self._schedule(loop)
            return
        x = batch[0].x if len(batch) == 1 else np.concatenate([w.x for w in batch])  # (rows, width)
        if x.shape[0] <= self.inline_max_rows:
            self._settle(batch, self._call(x))
            if self._queue:
                self._schedule(loop)
            return
        self._busy = True
        job = loop.run_in_executor(None, self._call, x)
        job.add_done_callback(lambda done: self._finished(batch, done))

    def _call(self, x: Float32Array) -> Rows | BaseException:
        try:
            return self._timed(x)
        except Exception as exc:  # handed to every caller of the run
            return exc

    def _finished(self, batch: list[_Waiting], done: asyncio.Future[Rows | BaseException]) -> None:
        self._busy = False
        out: Rows | BaseException
        try:
            out = done.result()
        except BaseException as exc:  # the executor future was cancelled
            out = exc
        self._settle(batch, out)
        if self._queue:
            self._schedule(asyncio.get_running_loop())

    @staticmethod
    def _settle(batch: list[_Waiting], out: Rows | BaseException) -> None:
        start = 0
        for waiting in batch:
            stop = start + waiting.rows
            if waiting.future.done():
                pass
            elif isinstance(out, BaseException):
                waiting.future.set_exception(out)
            else:
                waiting.future.set_result(tuple(None if a is None else a[start:stop] for a in out))
            start = stop


@dataclass(frozen=True)
class BatchLimits:
    max_rows: int = 64
    max_wait_s: float = 0.0
    queue_rows: int = 4096
    timeout_s: float | None = None
    inline_max_rows: int = 128
    retry_after_s: int = 1


class BatcherPool:
    """One MicroBatcher per (model version, operation), made on first use and dropped with the model."""

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        self._batchers: weakref.WeakKeyDictionary[OnnxModel, dict[str, MicroBatcher]] = (
            weakref.WeakKeyDictionary()
        )

    def get(
        self,
        model: OnnxModel,
        operation: str,
        fn: Callable[[OnnxModel, Float32Array], Rows],
        on_run: RunObserver | None = None,
    ) -> MicroBatcher:
        """The batcher for `operation` on `model`; `fn(model, x)` must depend only on the two."""
        per_model = self._batchers.setdefault(model, {})
        batcher = per_model.get(operation)
        if batcher is None:
            limits = self.limits
            # A weak reference, so that the batcher does not keep a reloaded-away model alive.
            ref = weakref.ref(model)

            def run(x: Float32Array) -> Rows:
                current = ref()
                if current is None:
                    raise ModelUnavailableError("the model was unloaded while the request waited; retry")
                return fn(current, x)

            batcher = MicroBatcher(
                run,
                max_rows=limits.max_rows,
                max_wait_s=limits.max_wait_s,
                queue_rows=limits.queue_rows,
                timeout_s=limits.timeout_s,
                inline_max_rows=limits.inline_max_rows,
                retry_after_s=limits.retry_after_s,
                on_run=on_run,
            )
            per_model[operation] = batcher
        return batcher
