"""Series on the training side: reading a series, its time column, the window, contiguous splits and folds."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import numpy as np
import numpy.typing as npt
import pytest

from service.contract import ModelMetadata, StepScore
from training.artifact import calibrate_graph, train_version
from training.calibration import calibrate
from training.config import TrainConfig
from training.data import DataError, DataOptions, load_data
from training.scoring import run_graph
from training.series import (
    MIN_WINDOW,
    choose_window,
    find_gaps,
    parse_times,
    per_position,
    series_dataset,
    series_folds,
    split_series,
    step_scores,
    windows_of,
)

Series = npt.NDArray[np.float64]


def sines(steps: int, channels: int = 3, seed: int = 0) -> Series:
    """(steps, channels) noisy sines, each channel its own period and unit."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[:, None]
    period = 12.0 + 5.0 * np.arange(channels)
    return (10.0 ** np.arange(channels)) * (
        np.sin(2 * np.pi * t / period) + 0.05 * rng.normal(size=(steps, channels))
    )


def iso(steps: int, every: int = 1) -> list[str]:
    start = datetime(2024, 3, 1, tzinfo=UTC)
    return [(start + timedelta(seconds=every * i)).isoformat() for i in range(steps)]


def write_csv(path: Path, header: list[str], columns: list[list[str]], delimiter: str = ",") -> Path:
    lines = [delimiter.join(header)] + [delimiter.join(row) for row in zip(*columns, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_series_csv_is_read_with_any_delimiter_less_its_time_and_label_columns(
    tmp_path: Path, delimiter: str
) -> None:
    values = sines(60)
    labels = ["0"] * 60
    cells = [iso(60), labels, *([f"{v:.6f}" for v in values[:, c]] for c in range(3))]
    path = write_csv(tmp_path / "s.csv", ["when", "label", "a", "b", "c"], cells, delimiter)
    data = load_data(str(path), DataOptions(time_column="when", drop_columns=("label",), window=8))
    assert data.kind == "series" and data.feature_names == ("a", "b", "c")
    assert data.series is not None and data.series.time_column == "when" and data.series.window == 8
    assert data.steps is not None
    np.testing.assert_allclose(data.steps, values, rtol=1e-5, atol=1e-6)
    assert data.x.shape == (60 - 8 + 1, 8, 3)
    np.testing.assert_array_equal(data.x[5], data.steps[5:13])


def test_series_columns_keep_the_named_channels_in_their_order(tmp_path: Path) -> None:
    values = sines(40)
    cells = [[str(i) for i in range(40)], *([f"{v:.6f}" for v in values[:, c]] for c in range(3))]
    path = write_csv(tmp_path / "s.csv", ["t", "a", "b", "c"], cells)
    data = load_data(str(path), DataOptions(time_column="t", columns=("c", "a"), window=4))
    assert data.feature_names == ("c", "a") and data.steps is not None
    np.testing.assert_allclose(data.steps[:, 0], values[:, 2], rtol=1e-5)


def test_series_time_column_numbers_or_iso_times_and_its_gaps() -> None:
    assert parse_times(["1", "2", "4.5"], "t", "s.csv").tolist() == [1.0, 2.0, 4.5]
    seconds = parse_times(["2024-03-01T00:00:00", "2024-03-01 00:00:10+00:00"], "t", "s.csv")
    assert seconds[1] - seconds[0] == 10.0
    times = np.array([0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0])
    gaps = find_gaps(times)
    assert (gaps.interval, gaps.count, gaps.largest, gaps.first_row) == (1.0, 1, 7.0, 5)
    assert find_gaps(np.arange(5.0)).count == 0


@pytest.mark.parametrize(
    ("cells", "fragment"),
    [
        (["1", "3", "2"], "goes back in time at row 3 ('2' after '3')"),
        (["1", "2", "2"], "repeats the time row 3"),
        (["2024-01-01", "2024-01-02", "yesterday"], "row 3 is 'yesterday'; expected an ISO 8601 time"),
        (["1", "2024-01-02"], "row 2 is '2024-01-02'; expected a number"),
        (["1", "nan"], "row 2 is 'nan'; expected a number"),
    ],
)
def test_series_time_column_must_be_increasing_unique_times(cells: list[str], fragment: str) -> None:
    with pytest.raises(DataError, match=None) as error:
        parse_times(cells, "t", "s.csv")
    assert fragment in str(error.value) and str(error.value).startswith("s.csv: time column 't'")


def test_series_window_is_the_first_zero_of_the_autocorrelation() -> None:
    t = np.arange(2000)[:, None]
    window, how = choose_window(np.sin(2 * np.pi * t / 40.0) + np.cos(2 * np.pi * t / 40.0 + 0.3))
    assert window == how["lag"] == 10  # a quarter of the period
    noise = np.random.default_rng(0).normal(size=(2000, 2))
    assert choose_window(noise)[0] == MIN_WINDOW  # decorrelated at once: the least window
    walk = np.cumsum(np.random.default_rng(1).normal(size=(400, 2)), axis=0) + np.arange(400)[:, None]
    assert choose_window(walk) == (
        50,
        {"rule": "first zero of the mean autocorrelation", "lag": None, "bounds": [MIN_WINDOW, 50]},
    )


@pytest.mark.parametrize(("steps", "window", "test_every"), [(100, 7, 5), (100, 7, 0), (120, 12, 4)])
def test_series_parts_are_contiguous_and_no_window_straddles_two(
    steps: int, window: int, test_every: int
) -> None:
    parts = split_series(steps, window, 0.2, test_every)
    assert parts.train.start == 0 and parts.train.stop == parts.validation.start
    assert parts.validation.stop == parts.test.start and parts.test.stop == steps
    assert (len(parts.test) > 0) == (test_every > 0)
    index = np.arange(steps, dtype=np.float64)[:, None]  # each step's value is its own index
    for _, part in parts.items():
        windows = windows_of(index, part, window)
        assert len(windows) == max(0, len(part) - window + 1)
        # Every step of every window lies inside the part it was cut from.
        assert all(part.start <= v < part.stop for v in windows.ravel())


def test_series_too_short_for_its_parts_is_a_data_error() -> None:
    with pytest.raises(DataError, match="the validation part of 40 steps has 8, expected at least 12"):
        split_series(40, 10, 0.2, 0)
    with pytest.raises(DataError, match="leave 8 for training"):
        split_series(8, 8, 0.0, 0)


@pytest.mark.parametrize(("windows", "folds", "window"), [(143, 5, 8), (60, 3, 12), (30, 2, 4)])
def test_series_folds_never_train_on_a_window_sharing_a_step_with_a_scored_one(
    windows: int, folds: int, window: int
) -> None:
    plan = series_folds(windows, folds, window)
    assert sorted(np.concatenate(plan.folds).tolist()) == list(range(windows))
    for fold, scored in enumerate(plan.folds):
        assert np.all(np.diff(scored) == 1)  # one block of consecutive windows
        scored_steps = set(range(int(scored[0]), int(scored[-1]) + window))
        for start in plan.training_rows(fold).tolist():
            assert scored_steps.isdisjoint(range(start, start + window))


def test_series_folds_too_few_windows_is_a_data_error() -> None:
    with pytest.raises(DataError, match="too few time steps to cross-fit: 20 windows of 16 steps"):
        series_folds(20, 5, 16)


def test_series_cross_fitted_calibration_scores_every_training_step_out_of_fold(tmp_path: Path) -> None:
    dataset = series_dataset(sines(150), "sines", DataOptions(kind="series", window=WINDOW, stride=2))
    config = TrainConfig(variant="plain", epochs=2, latent_dim=2, hidden=(4,), patience=10**6)
    meta = train_version(config, dataset, tmp_path, "sines", progress=False).metadata
    assert meta.series is not None and meta.series.stride == 2
    assert meta.data.n_validation == 0 and meta.training["folds"] == 5
    for score, calibration in meta.calibration.items():
        # One per-step score for each step a stride-1 window of the training part ends at.
        assert (calibration.method, calibration.folds, calibration.n) == ("cross_fit", 5, 150 - WINDOW + 1)
        assert meta.metrics[f"out_of_fold_{score}_mean"] == pytest.approx(calibration.mean, rel=1e-5)


# --- the scores training calibrates on are the scores the service answers -----------------------------------

WINDOW = 8
RULES: tuple[StepScore, ...] = get_args(StepScore)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path, Series]]:
    """A tiny series model trained on 150 steps, written once per step rule (`sines-<rule>`), and a client of
    the service on them."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    out = tmp_path_factory.mktemp("series-models")
    values = sines(150)
    dataset = series_dataset(values, "sines", DataOptions(kind="series", window=WINDOW))
    config = TrainConfig(variant="plain", epochs=3, latent_dim=2, hidden=(4,), patience=10**6, folds=0)
    trained = train_version(config, dataset, out, "sines", test_every=0, progress=False)
    for rule in RULES:
        directory = out / f"sines-{rule}" / "1"
        shutil.copytree(trained.directory, directory)
        assert trained.metadata.series is not None
        series = trained.metadata.series.model_copy(update={"step_score": rule})
        trained.metadata.model_copy(update={"name": f"sines-{rule}", "series": series}).write(directory)
    with TestClient(create_app(Settings(models_dir=out, max_batch_rows=256))) as client:
        yield client, trained.directory, values


def _service_steps(client: Any, rule: str, series: Series) -> list[float]:
    body = {"model": f"sines-{rule}", "inputs": series.tolist()}
    answer = client.post("/reconstruction-error", json=body)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["errors"])


def _training_steps(directory: Path, rule: StepScore, series: Series) -> Series:
    """Per-step scores of `series` as training makes them: the fused graph on its stride-1 windows."""
    meta = ModelMetadata.read(directory)
    assert meta.series is not None
    windows = windows_of(series.astype(np.float32), range(len(series)), WINDOW)
    outputs = run_graph(directory, meta.graphs["model"], windows)
    return step_scores(per_position(meta.series, "mse", outputs["error"], outputs["feature_errors"]), rule)


@pytest.mark.parametrize("rule", RULES)
def test_series_training_calibrates_on_the_per_step_scores_the_service_answers(
    served: tuple[Any, Path, Series], rule: StepScore
) -> None:
    client, directory, values = served
    meta = ModelMetadata.read(directory)
    assert meta.series is not None
    start, stop = meta.training["data"]["parts"]["validation"]
    windows = windows_of(values.astype(np.float32), range(start, stop), WINDOW)
    spec = meta.series.model_copy(update={"step_score": rule})
    calibrated = calibrate_graph(directory, meta.graphs["model"], ["mse"], windows, 0.01, spec)["mse"]
    # The validation part sent as one series: the scores of the steps its windows end at.
    answered = _service_steps(client, rule, values[start:stop])[WINDOW - 1 :]
    assert calibrated.n == len(answered) == stop - start - WINDOW + 1
    expected = calibrate(np.asarray(answered), 0.01)
    assert calibrated.threshold == pytest.approx(expected.threshold, rel=1e-5)
    assert calibrated.mean == pytest.approx(expected.mean, rel=1e-5)
    if rule == meta.series.step_score:  # the calibration written is that one
        assert meta.calibration["mse"].threshold == pytest.approx(expected.threshold, rel=1e-5)


@pytest.mark.parametrize("rule", RULES)
def test_series_one_request_chunks_and_window_by_window_give_the_training_scores(
    served: tuple[Any, Path, Series], rule: StepScore
) -> None:
    client, directory, values = served
    expected = _training_steps(directory, rule, values)
    whole = _service_steps(client, rule, values)
    np.testing.assert_allclose(whole, expected, rtol=1e-5, atol=1e-7)
    if rule in ("covering_mean", "covering_max"):
        return  # not causal: a chunk's last steps change once later steps arrive
    stitched = _service_steps(client, rule, values[:30])
    for start in range(30, len(values), 30):  # each chunk with the window - 1 steps before it
        stitched += _service_steps(client, rule, values[start - WINDOW + 1 : start + 30])[WINDOW - 1 :]
    streamed = _service_steps(client, rule, values[:WINDOW])
    for t in range(WINDOW, len(values)):
        streamed.append(_service_steps(client, rule, values[t - WINDOW + 1 : t + 1])[-1])
    np.testing.assert_allclose(stitched, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(streamed, expected, rtol=1e-5, atol=1e-7)


def test_series_a_longer_series_never_changes_the_score_of_an_unchanged_window(
    served: tuple[Any, Path, Series],
) -> None:
    client, directory, values = served
    for rule in ("last", "window_mean"):
        short = _training_steps(directory, rule, values[:40])
        longer = _training_steps(directory, rule, values)
        np.testing.assert_allclose(longer[:40], short, rtol=1e-6)
        np.testing.assert_allclose(_service_steps(client, rule, values[:40]), short, rtol=1e-5, atol=1e-7)
    # And whatever the rule, each window's own score: the windows of the first 40 steps are unchanged.
    answer = client.post(
        "/reconstruction-error", json={"model": "sines-covering_mean", "inputs": values.tolist()}
    )
    first = client.post(
        "/reconstruction-error", json={"model": "sines-covering_mean", "inputs": values[:40].tolist()}
    )
    np.testing.assert_allclose(
        answer.json()["window_errors"][: 40 - WINDOW + 1], first.json()["window_errors"], rtol=1e-6
    )
