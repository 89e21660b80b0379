"""Real servers (`python -m service` on a free port) and writable copies of the tiny model repository."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import FIXTURE_MODELS
from tests.live import LiveServer


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A writable copy of the tiny fixture repository."""
    target = tmp_path / "models"
    shutil.copytree(FIXTURE_MODELS, target)
    return target


@pytest.fixture
def server_factory() -> Iterator[Callable[..., LiveServer]]:
    """Start real servers, stopped at teardown; settings as keywords (`max_queue="1"` is AE_MAX_QUEUE=1).

    `ready_path="/healthz"` for a repository with a broken model, whose /readyz stays 503.
    """
    with ExitStack() as servers:

        def make(models: Path, workers: int = 1, ready_path: str = "/readyz", **settings: str) -> LiveServer:
            env = {f"AE_{name.upper()}": value for name, value in settings.items()}
            server = LiveServer(models, "--workers", str(workers), env=env, ready_path=ready_path)
            return servers.enter_context(server)

        yield make
