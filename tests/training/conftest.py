from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch
from sklearn.datasets import load_digits

from service.contract import InputKind
from training.bodies import BODIES
from training.data import Normaliser
from training.objectives import OBJECTIVES

Samples = npt.NDArray[np.float32]


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """Training runs on one thread (what TrainConfig sets); more only make these tiny networks slower."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> npt.NDArray[np.float32]:
    """The first 200 digits, raw pixel values 0..16, (200, 64)."""
    rows: npt.NDArray[np.float32] = load_digits().data[:200].astype(np.float32)
    return rows


def series_windows(n: int, window: int, channels: int, seed: int = 0) -> Samples:
    """(n, window, channels) windows of noisy sines, each channel its own period, offset and unit."""
    rng = np.random.default_rng(seed)
    steps = np.arange(window)[None, :, None] + rng.uniform(0, 50, (n, 1, 1))  # (n, window, 1)
    period = 4.0 + 3.0 * np.arange(channels)  # (channels,)
    unit = 10.0 ** np.arange(channels)  # channels in very different units
    waves = np.sin(2 * np.pi * steps / period) + 0.05 * rng.normal(size=(n, window, channels))
    windows: Samples = (unit * (waves + np.arange(channels))).astype(np.float32)
    return windows


@pytest.fixture(scope="session")
def samples(digits: npt.NDArray[np.float32]) -> dict[InputKind, Samples]:
    """Raw samples of each input kind, shaped as a data set holds them: 200 digit rows (200, 64), the same
    digits as images (200, 1, 8, 8), and 200 series windows of a prime length (200, 13, 3)."""
    return {
        "rows": digits,
        "image": digits.reshape(-1, 1, 8, 8),
        "series": series_windows(200, 13, 3),
    }


def tiny_hidden(body: str) -> tuple[int, ...]:
    """A quarter of the body's default capacity: enough to learn something in a few steps, fast to run."""
    return tuple(max(1, width // 4) for width in BODIES[body].default_hidden)


def body_samples(samples: dict[InputKind, Samples], body: str, kind: InputKind) -> tuple[Samples, Normaliser]:
    """The raw samples of `kind` shaped as `body`'s graphs take them, and a normaliser fitted on them as
    training fits it (per channel, one scale for all pixels of an image)."""
    raw = samples[kind]
    cls = BODIES[body]
    shaped = raw.reshape(len(raw), *cls.input_shape_for(raw.shape[1:], kind))
    normaliser = Normaliser.fit(shaped, "minmax", shared=kind == "image", channel_axis=cls.channel_axis)
    return shaped, normaliser


# Every objective on every body, on every kind of data the body reads.
CASES = [(o, b, k) for o in OBJECTIVES for b in BODIES for k in BODIES[b].reads]
CASE_IDS = [f"{o}-{b}-{k}" for o, b, k in CASES]
