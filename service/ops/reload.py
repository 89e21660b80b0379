"""Hot reload: rescan the model repository and the API keys file, coalesced and rate-limited.

`POST /admin/reload` and SIGHUP both call `Reloader.reload()`. Reloads run one at a time, off the event loop,
at most once per AE_RELOAD_MIN_INTERVAL_S: callers that arrive while one is pending share it, callers that
arrive while one runs share the next (which starts after it, so it sees their changes). A flood of reload
requests therefore costs one rescan per interval. With several server workers, `python -m service` runs a
supervisor that forwards SIGHUP to every worker, and the admin route signals the supervisor after its own
reload, so that every worker rescans (one that has nothing new reuses its sessions: a directory walk).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from service.core.registry import ModelRegistry, ReloadReport
from service.ops.auth import ApiKeys
from service.ops.metrics import ServiceMetrics

__all__ = ["SUPERVISOR_PID_ENV", "ReloadOutcome", "Reloader", "signal_supervisor"]

logger = logging.getLogger(__name__)

SUPERVISOR_PID_ENV = "AE_SUPERVISOR_PID"
"""Set by `python -m service` for its workers: the pid of the supervisor that fans SIGHUP out to them."""


@dataclass(frozen=True)
class ReloadOutcome:
    report: ReloadReport
    keys_error: str | None
    """Why the API keys now refuse every request (a configured source with no usable key), or None."""


class Reloader:
    def __init__(
        self, registry: ModelRegistry, keys: ApiKeys, metrics: ServiceMetrics, min_interval_s: float = 1.0
    ) -> None:
        self.registry = registry
        self.keys = keys
        self.metrics = metrics
        self.min_interval_s = min_interval_s
        self.runs = 0
        """Reloads actually run (fewer than asked for when they coalesce)."""
        self._next: asyncio.Future[ReloadOutcome] | None = None
        self._lock: asyncio.Lock | None = None
        self._last_start = -float("inf")
        self._tasks: set[asyncio.Task[None]] = set()

    def reload_now(self) -> ReloadOutcome:
        """Blocking: re-read the keys file, rescan the repository, swap the new snapshot in."""
        keys_error = self.keys.reload()
        report = self.registry.reload()
        self.metrics.models_loaded.set(len(report.snapshot.all_models()))
        self.metrics.models_failed.set(len(report.snapshot.failures))
        return ReloadOutcome(report, keys_error)

    async def reload(self) -> ReloadOutcome:
        """A reload that starts after this call, shared with every other caller waiting for one."""
        if self._next is None:
            future: asyncio.Future[ReloadOutcome] = asyncio.get_running_loop().create_future()
            self._next = future
            task = asyncio.get_running_loop().create_task(self._run(future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(self._next)

    async def _run(self, future: asyncio.Future[ReloadOutcome]) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            wait = self._last_start + self.min_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._next is future:
                self._next = None  # callers from now on wait for the run after this one
            self._last_start = time.monotonic()
            self.runs += 1
            try:
                future.set_result(await run_in_threadpool(self.reload_now))
            except Exception as exc:  # a reload must never take the worker down; its callers get the error
                logger.exception("reload failed")
                future.set_exception(exc)

    def on_sighup(self) -> None:
        """Signal handler (on the event loop): start a reload in the background."""
        logger.info("SIGHUP: reloading the model repository")
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_logged(self) -> None:
        with contextlib.suppress(Exception):  # already logged by _run
            await self.reload()


def signal_supervisor() -> bool:
    """Tell the supervisor of several workers to have every worker reload; False with a single worker."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor or not supervisor.isdigit() or int(supervisor) != os.getppid():
        return False
    os.kill(int(supervisor), signal.SIGHUP)
    return True
