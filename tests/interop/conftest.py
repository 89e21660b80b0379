"""A live server (`python -m service` on a free loopback port) on the tiny fixture models, per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.make_models import FIXTURE_MODELS
from tests.live import LiveServer


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    with LiveServer(FIXTURE_MODELS) as server:
        yield server
