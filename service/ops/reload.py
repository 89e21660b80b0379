"""Hot reload: `POST /admin/reload` and SIGHUP rescan the model repository (and the API keys file).

With several server workers, `python -m service` runs a supervisor that forwards SIGHUP to every worker, and
`POST /admin/reload` reloads the worker that took it and then sends SIGHUP to the supervisor, so every worker
rescans. A worker that has nothing new to load reuses its sessions, so the extra rescan costs only a
directory walk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.core.registry import LoadFailure, ModelRegistry, ReloadReport
from service.ops.auth import ApiKeys
from service.ops.metrics import ServiceMetrics
from service.protocols.schemas import ErrorResponse

__all__ = ["SUPERVISOR_PID_ENV", "ReloadFailure", "ReloadResponse", "Reloader", "router"]

logger = logging.getLogger(__name__)

SUPERVISOR_PID_ENV = "AE_SUPERVISOR_PID"
"""Set by `python -m service` for its workers: the pid of the supervisor that fans SIGHUP out to them."""


class ReloadFailure(BaseModel):
    model: str
    version: int | None
    error: str = Field(description="Why the version's files did not load.")


class ReloadResponse(BaseModel):
    added: list[str] = Field(description="Versions loaded for the first time, as `name/version`.")
    updated: list[str] = Field(description="Versions whose files changed and were loaded again.")
    removed: list[str] = Field(description="Versions no longer in the repository, no longer served.")
    unchanged: list[str] = Field(description="Versions whose files did not change (sessions reused).")
    kept: list[ReloadFailure] = Field(
        description="Versions whose new files failed to load; their previous load keeps serving."
    )
    failed: list[ReloadFailure] = Field(description="Versions that failed to load and are not served.")
    api_keys_error: str | None = Field(
        default=None, description="Why the API keys file could not be re-read (the old keys stay)."
    )
    workers_signalled: bool = Field(
        description="Whether the other server workers were told to reload too (several workers only)."
    )


def _failures(failures: list[LoadFailure]) -> list[ReloadFailure]:
    return [ReloadFailure(model=f.name, version=f.version, error=f.error) for f in failures]


class Reloader:
    """Reloads the registry and the API keys, one reload at a time, off the event loop."""

    def __init__(self, registry: ModelRegistry, keys: ApiKeys, metrics: ServiceMetrics) -> None:
        self.registry = registry
        self.keys = keys
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def reload_now(self) -> tuple[ReloadReport, str | None]:
        """Blocking: re-read the keys file, rescan the repository, swap the new snapshot in."""
        keys_error = None
        try:
            self.keys.reload()
        except RuntimeError as exc:
            keys_error = str(exc)
            logger.error("API keys not reloaded, the previous keys stay: %s", exc)
        report = self.registry.reload()
        self.metrics.models_loaded.set(len(report.snapshot.all_models()))
        self.metrics.models_failed.set(len(report.snapshot.failures))
        return report, keys_error

    async def reload(self) -> tuple[ReloadReport, str | None]:
        """Reload on a worker thread, so the event loop keeps serving while sessions are built."""
        return await run_in_threadpool(self.reload_now)

    def on_sighup(self) -> None:
        """Signal handler (on the event loop): start a reload in the background."""
        logger.info("SIGHUP: reloading the model repository")
        task = asyncio.get_running_loop().create_task(self._reload_logged())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except Exception:  # a reload must never take the worker down
            logger.exception("reload after SIGHUP failed")


def _signal_supervisor() -> bool:
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor or not supervisor.isdigit() or int(supervisor) != os.getppid():
        return False
    os.kill(int(supervisor), signal.SIGHUP)
    return True


router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/reload",
    operation_id="admin_reload",
    response_model=ReloadResponse,
    responses={
        401: {"model": ErrorResponse, "description": "No API key (when keys are configured)."},
        403: {"model": ErrorResponse, "description": "Wrong API key."},
    },
)
async def reload_models(request: Request) -> ReloadResponse:
    """Rescan the model repository and the API keys file, and swap the models atomically."""
    reloader: Reloader = request.state.reloader
    report, keys_error = await reloader.reload()
    return ReloadResponse(
        added=report.added,
        updated=report.updated,
        removed=report.removed,
        unchanged=report.unchanged,
        kept=_failures(report.kept),
        failed=_failures(report.failed),
        api_keys_error=keys_error,
        workers_signalled=_signal_supervisor(),
    )
