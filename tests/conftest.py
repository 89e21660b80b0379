"""Shared fixtures: the tiny committed model repository and a TestClient factory for the service."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURE_MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "models"
"""The project's own `models/` repository: the trained models it ships (and bakes into its image)."""


@pytest.fixture
def fixture_models() -> Path:
    """The committed tiny repository: `tiny` (plain, versions 1 and 2) and `tiny-vae`."""
    return FIXTURE_MODELS


@pytest.fixture
def make_client() -> Iterator[Callable[..., Any]]:
    """Start the app (lifespan included) on a model repository with settings overrides; closed at teardown."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    clients: list[Any] = []

    def make(models_dir: Path = FIXTURE_MODELS, **overrides: Any) -> Any:
        client = TestClient(create_app(Settings(models_dir=models_dir, **overrides)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Any:
    """A client on the tiny fixture repository with default settings."""
    return make_client()
