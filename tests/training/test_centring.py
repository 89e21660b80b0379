"""Centred (level-free) series channels: chosen from the data, baked into the graphs, blind to a drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from service.contract import ModelMetadata, Normalisation, SeriesSpec
from tests.training.conftest import series_windows, tiny_hidden
from training.artifact import train_version
from training.config import TrainConfig
from training.data import DataError, Dataset, Normaliser
from training.export import export_graphs
from training.objectives import OBJECTIVES, build_model
from training.series import DRIFT_AT_LEAST, centred_channels, drift_share, within_window_share

WINDOW, CHANNELS = 13, 3


def _drifting(n: int = 200, seed: int = 0, cycling: bool = False, wandering: bool = False) -> np.ndarray:
    """Windows, in time order, of a series whose channel 2 drifts up slowly (its level differs from window
    to window far more than it moves within one), with `cycling` goes up and down through the same levels
    five times, or with `wandering` rises and comes back once (no trend a straight line would see); channels
    0 and 1 are fast sines."""
    windows = series_windows(n, WINDOW, CHANNELS, seed).astype(np.float64)
    rng = np.random.default_rng(seed + 1)
    t = np.arange(n)[:, None] / n  # (n, 1): when each window starts
    # Wandering: up for half the span, back down for the other, so a straight line through it is flat.
    level = 4000 * t * (1 - t) if wandering else 1000 * (np.sin(2 * np.pi * 5 * t) if cycling else t)
    windows[:, :, 2] = level + 5 * rng.normal(size=(n, 1)) + 0.1 * np.arange(WINDOW)[None, :]
    return windows.astype(np.float32)


def _run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"x": x}), strict=True))


def test_auto_centres_the_channel_that_drifts_and_not_one_that_cycles() -> None:
    windows = _drifting()
    share = within_window_share(windows)
    assert share[2] < 0.01 and share[0] > 0.5 and share[1] > 0.5
    assert drift_share(windows)[2] > 0.9
    assert centred_channels(windows, None, ("a", "b", "c")) == (2,)
    # A level that wanders with no trend drifts as much: each quarter of the training part sees other levels.
    wandering = _drifting(wandering=True)
    assert within_window_share(wandering)[2] < 0.01 and drift_share(wandering)[2] > DRIFT_AT_LEAST
    assert centred_channels(wandering, None, ("a", "b", "c")) == (2,)
    # Levels that move as much from window to window but keep coming back (a daily cycle) are kept.
    cycling = _drifting(cycling=True)
    assert within_window_share(cycling)[2] < 0.01 and drift_share(cycling)[2] < DRIFT_AT_LEAST / 2
    assert centred_channels(cycling, None, ("a", "b", "c")) == ()
    assert centred_channels(windows, (), None) == ()
    assert centred_channels(windows, ("c", "a"), ("a", "b", "c")) == (0, 2)
    assert centred_channels(windows, ("1",), None) == (1,)
    with pytest.raises(DataError, match="no channel 'd'; the channels are a, b, c"):
        centred_channels(windows, ("d",), ("a", "b", "c"))


def test_normaliser_sets_each_windows_level_aside_and_inverse_restores_it() -> None:
    windows = _drifting()
    normaliser = Normaliser.fit(windows, "minmax", centred=(2,))
    normalised = normaliser.transform(windows)
    assert normaliser.level is not None
    # Every window's mean on the centred channel is its training level; the others keep theirs.
    np.testing.assert_allclose(normalised[:, :, 2].mean(axis=1), normaliser.level[0, 2], atol=1e-5)
    shifted = windows.copy()
    shifted[:, :, 2] += 500.0  # a level the training part never reached
    np.testing.assert_allclose(normaliser.transform(shifted)[:, :, 2], normalised[:, :, 2], atol=1e-4)
    np.testing.assert_allclose(normaliser.inverse(normalised, like=windows), windows, rtol=1e-4, atol=1e-2)
    # The metadata's record reads back to the same normaliser.
    back = Normaliser.of(normaliser.record(), (WINDOW, CHANNELS), -1)
    np.testing.assert_array_equal(back.transform(windows), normalised)
    with pytest.raises(ValueError, match="only series windows"):
        Normaliser.fit(windows.reshape(len(windows), -1), "minmax", centred=(2,))


def test_normalisation_record_refuses_inconsistent_centring() -> None:
    with pytest.raises(ValueError, match="one entry per centred channel"):
        Normalisation(kind="minmax", offset=[0, 0], scale=[1, 1], centred=[1], level=[])
    with pytest.raises(ValueError, match="distinct channel indices"):
        Normalisation(kind="minmax", offset=[0, 0], scale=[1, 1], centred=[2], level=[0.5])


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
@pytest.mark.parametrize("body", ["conv1d", "mlp"])
def test_centred_graphs_match_torch_and_ignore_the_level(objective: str, body: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    windows = _drifting()
    normaliser = Normaliser.fit(windows, "minmax", centred=(2,))
    model = build_model(objective, body, (WINDOW, CHANNELS), 4, tiny_hidden(body), {}).eval()
    graphs, parity = export_graphs(model, normaliser, tmp_path, windows[:20])
    assert 0 <= parity <= 1e-5
    x = windows[20:27]
    out = _run(tmp_path / graphs["model"].path, x)
    lifted = x.copy()
    lifted[:, :, 2] += 700.0
    moved = _run(tmp_path / graphs["model"].path, lifted)
    # The centred channel's level changes neither the code nor the error; the reconstruction follows it.
    np.testing.assert_allclose(moved["error"], out["error"], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(
        moved["reconstruction"][:, :, 2], out["reconstruction"][:, :, 2] + 700, atol=0.05
    )
    np.testing.assert_allclose(moved["reconstruction"][:, :, :2], out["reconstruction"][:, :, :2], atol=1e-3)
    # An uncentred channel's level is read.
    fast = x.copy()
    fast[:, :, 0] += 5.0
    assert np.all(_run(tmp_path / graphs["model"].path, fast)["error"] > out["error"] * 2)


def test_train_version_records_the_centred_channels_it_chose(tmp_path: Path) -> None:
    windows = _drifting()
    dataset = Dataset(
        windows,
        "windows",
        "series",
        series=SeriesSpec(window=WINDOW, channels=CHANNELS),
        feature_names=("a", "b", "c"),
    )
    config = TrainConfig(latent_dim=3, hidden=(4,), epochs=1, folds=0, neighbours=0)
    trained = train_version(config, dataset, tmp_path, "drift", test_every=0, progress=False)
    metadata = ModelMetadata.read(trained.directory)
    assert metadata.normalisation.centred == [2] and len(metadata.normalisation.level) == 1
    assert metadata.training["centred_channels"] == ["c"]
    none = train_version(
        TrainConfig(latent_dim=3, hidden=(4,), epochs=1, folds=0, neighbours=0, centred_channels=()),
        dataset,
        tmp_path,
        "level",
        test_every=0,
        progress=False,
    )
    assert none.metadata.normalisation.centred == [] and none.metadata.training["centred_channels"] == []


def test_centred_channels_are_refused_for_rows(tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    config = TrainConfig(latent_dim=2, hidden=(4,), epochs=1, folds=0, neighbours=0, centred_channels=("0",))
    with pytest.raises(DataError, match="--centred-channels is for a series"):
        train_version(config, Dataset(rows, "rows"), tmp_path, "rows", test_every=0, progress=False)
