"""Series on the training side: the time column, the window, contiguous splits and folds, per-step scores.

A series is (T, channels): rows are time steps, columns channels. Training cuts it into windows with
`service.core.windows.cut_windows` and turns per-window values into per-step ones with its `to_steps`, the
functions the service uses, so that a model is calibrated on exactly the per-step scores the service answers.

Time order is kept everywhere. The test part (when asked for) is the end of the series, the validation part
the end of what is left, the training part the beginning; windows are cut inside each part, so that no
window straddles two. Cross-fitting uses contiguous folds of windows (`series_folds`) with a gap of
window - 1 windows on each side of each block: window j ends at step j + window - 1, so a training window of
a fold never shares a step with the windows it scores.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from service.contract import ScoreName, SeriesSpec, StepScore
from service.core.windows import cut_windows, to_steps, window_count
from training.crossfit import FoldPlan, fold_plan
from training.data import Array, DataError, DataOptions, Dataset

__all__ = [
    "CENTRE_BELOW",
    "DRIFT_AT_LEAST",
    "DRIFT_PARTS",
    "MAX_WINDOW_FRACTION",
    "MIN_WINDOW",
    "Gaps",
    "SeriesParts",
    "centred_channels",
    "choose_window",
    "drift_share",
    "find_gaps",
    "parse_times",
    "per_position",
    "series_dataset",
    "series_folds",
    "split_series",
    "step_scores",
    "window_end_scores",
    "windows_of",
    "within_window_share",
]

MIN_WINDOW = 8
# The chosen window is at most this share of the training steps, so that each contiguous fold still trains
# on windows of its own after the gaps beside the block it scores.
MAX_WINDOW_FRACTION = 1 / 8
# A channel is read level-free by default when it drifts: its values vary within a window by less than
# CENTRE_BELOW of their variance over the training part (its level moves from window to window), and the
# means of its window levels over DRIFT_PARTS consecutive parts of the training part explain at least
# DRIFT_AT_LEAST of their variance (its level wanders or moves one way, as a warming temperature does, rather
# than cycling, within each part, through levels every part has seen). Later levels of a drifting channel
# say little about the process (docs/time-series.md).
CENTRE_BELOW = 0.5
DRIFT_PARTS = 4
DRIFT_AT_LEAST = 0.2


def parse_times(cells: Sequence[str], column: str, source: str) -> npt.NDArray[np.float64]:
    """A time column's cells -> seconds (numbers as they are, ISO 8601 times as POSIX seconds, a time
    without a zone read as UTC); DataError unless all are one or the other, strictly increasing."""
    values: list[float] = []
    iso = not _is_number(cells[0]) if cells else False
    for row, cell in enumerate(cells, start=1):
        text = cell.strip()
        try:
            if iso:
                moment = datetime.fromisoformat(text)
                values.append((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
            else:
                values.append(float(text))
                if not math.isfinite(values[-1]):
                    raise ValueError(text)
        except ValueError:
            expected = "an ISO 8601 time like its first row" if iso else "a number like its first row"
            raise DataError(
                f"{source}: time column {column!r} row {row} is {text!r}; expected {expected}"
            ) from None
    times = np.asarray(values, dtype=np.float64)
    steps = np.diff(times)
    if (steps <= 0).any():
        at = int(np.argmax(steps <= 0)) + 1  # 0-based index of the later row
        what = "repeats the time" if steps[at - 1] == 0 else "goes back in time at"
        raise DataError(
            f"{source}: time column {column!r} {what} row {at + 1} ({cells[at].strip()!r} after "
            f"{cells[at - 1].strip()!r}); expected unique times in increasing order"
        )
    return times


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Gaps:
    """Intervals of a time column longer than usual: where steps are missing."""

    interval: float
    """The median interval between consecutive rows, in the column's units (seconds for ISO times)."""
    count: int
    """How many intervals exceed 1.5 times the median."""
    largest: float
    first_row: int | None
    """The 1-based row after the first gap (None without gaps)."""

    def describe(self, column: str) -> str:
        if not self.count:
            return f"time column {column!r}: evenly spaced, interval {self.interval:g}"
        return (
            f"time column {column!r}: {self.count} gaps longer than 1.5 x the median interval "
            f"{self.interval:g} (largest {self.largest:g}, first before row {self.first_row}); the windows "
            "span them as if the steps were consecutive"
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def find_gaps(times: npt.NDArray[np.float64]) -> Gaps:
    """The gaps of strictly increasing times (two or more)."""
    intervals = np.diff(times)
    median = float(np.median(intervals))
    long = np.flatnonzero(intervals > 1.5 * median)
    return Gaps(
        interval=median,
        count=len(long),
        largest=float(intervals.max()),
        first_row=int(long[0]) + 2 if len(long) else None,
    )


def autocorrelation(values: Array, max_lag: int) -> npt.NDArray[np.float64]:
    """Mean over channels of each channel's autocorrelation at lags 0..max_lag (constant channels left out;
    all zero when every channel is constant)."""
    centred = values.astype(np.float64) - values.mean(axis=0)
    power = (centred**2).sum(axis=0)  # (channels,)
    live = power > 1e-12 * max(1.0, float(power.max()))
    if not live.any():
        return np.zeros(max_lag + 1)
    x = centred[:, live] / np.sqrt(power[live])
    return np.array([float((x[: len(x) - lag] * x[lag:]).sum(axis=0).mean()) for lag in range(max_lag + 1)])


def choose_window(values: Array) -> tuple[int, dict[str, Any]]:
    """The window for a series (T, channels) when none is given, and how it was found.

    The first lag at which the mean autocorrelation over channels falls to zero: the span over which a step
    still tells about its neighbours, and so the context a window should hold. Kept between MIN_WINDOW and
    MAX_WINDOW_FRACTION of the steps (the largest when it never falls to zero within that)."""
    limit = max(MIN_WINDOW, int(len(values) * MAX_WINDOW_FRACTION))
    acf = autocorrelation(values, min(limit, len(values) - 1))
    below = np.flatnonzero(acf[1:] <= 0.0)
    lag = int(below[0]) + 1 if len(below) else limit
    window = min(max(lag, MIN_WINDOW), limit)
    return window, {
        "rule": "first zero of the mean autocorrelation",
        "lag": lag if len(below) else None,
        "bounds": [MIN_WINDOW, limit],
    }


@dataclass(frozen=True)
class SeriesParts:
    """Contiguous step ranges [start, stop) of a series' three parts, in time order: train, validation,
    test (an empty range where a part is not held out)."""

    train: range
    validation: range
    test: range

    def as_dict(self) -> dict[str, list[int]]:
        return {name: [r.start, r.stop] for name, r in self.items()}

    def items(self) -> list[tuple[str, range]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]


def split_series(steps: int, window: int, validation_fraction: float, test_every: int) -> SeriesParts:
    """The test part is the last 1 / test_every of the steps (none for 0), the validation part the last
    `validation_fraction` of the rest (none for 0), the training part the beginning; DataError when a part
    held out would be too short for its windows, or the training part shorter than two."""
    n_test = math.ceil(steps / test_every) if test_every > 0 else 0
    rest = steps - n_test
    n_val = round(validation_fraction * rest) if validation_fraction > 0 else 0
    n_train = rest - n_val
    # A validation part also probes the exported graphs, which needs three windows.
    for name, size, least in (("test", n_test, window), ("validation", n_val, window + 2)):
        if 0 < size < least:
            raise DataError(
                f"too few time steps: the {name} part of {steps} steps has {size}, expected at least {least} "
                f"for windows of {window}: a longer series, a smaller --window, or no {name} part"
            )
    if n_train < window + 1:
        raise DataError(
            f"too few time steps: {steps} steps leave {n_train} for training after the held-out parts, "
            f"expected at least {window + 1} for windows of {window}"
        )
    return SeriesParts(range(0, n_train), range(n_train, rest), range(rest, steps))


def windows_of(series: Array, part: range, window: int, stride: int = 1) -> Array:
    """The windows (n, window, channels) cut inside the steps `part` of `series` (T, channels), a copy;
    (0, window, channels) for a part shorter than a window."""
    if window_count(len(part), window, stride) == 0:
        return np.zeros((0, window, series.shape[1]), dtype=series.dtype)
    return np.ascontiguousarray(cut_windows(series[part.start : part.stop], window, stride))


def series_folds(windows: int, folds: int, window: int) -> FoldPlan:
    """Contiguous folds of `windows` consecutive stride-1 windows for cross-fitting, each block's model
    trained on none of the window - 1 windows either side of it: window j covers steps j .. j + window - 1,
    so no training window shares a step with a window it scores. DataError when a fold would have nothing
    to train on."""
    try:
        return fold_plan(windows, min(folds, windows), contiguous=True, gap=window - 1)
    except ValueError:
        raise DataError(
            f"too few time steps to cross-fit: {windows} windows of {window} steps in {folds} contiguous "
            f"folds leave a fold nothing to train on once the {window - 1} windows beside its block are left "
            "out; "
            "expected a longer series, a smaller --window, fewer --folds or --folds 0"
        ) from None


def per_position(
    spec: SeriesSpec, score: ScoreName, values: npt.NDArray[Any], feature_errors: npt.NDArray[Any]
) -> npt.NDArray[Any]:
    """(n, window) per-window, per-position values of one score, as the service makes them: for mse each
    position's error averaged over channels, for a score of the whole window that value at every position.

    `values` is the fused graph's (n,) output for the score, `feature_errors` its (n, window, channels)."""
    if score == "mse":
        return feature_errors.mean(axis=2)  # type: ignore[no-any-return]
    return np.repeat(values[:, None], spec.window, axis=1)


def step_scores(per_window: npt.NDArray[Any], rule: StepScore) -> npt.NDArray[Any]:
    """(n, window) values of n consecutive stride-1 windows -> (n + window - 1,) per-step scores."""
    return to_steps(per_window, rule)


def window_end_scores(per_window: npt.NDArray[Any], rule: StepScore) -> npt.NDArray[Any]:
    """The per-step scores of the steps the n consecutive stride-1 windows end at, (n,): what a client that
    sends the last `window` steps reads for the newest (exactly, for the causal rules)."""
    window = per_window.shape[1]
    return to_steps(per_window, rule)[window - 1 :]


def _finite(values: Array, names: Sequence[str] | None, source: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        where = repr(names[column]) if names else str(column)
        raise DataError(
            f"{source}: expected finite numbers, found {int(bad.sum())} NaN/inf values (first at row "
            f"{row + 1}, column {where})"
        )


def series_dataset(
    raw: npt.NDArray[Any],
    source: str,
    options: DataOptions,
    names: Sequence[str] | None = None,
    times: Sequence[str] | None = None,
) -> Dataset:
    """One series, `raw` (T, channels) with rows in time order (or its time column's cells `times`), as a
    data set of its windows at `options.stride`; windows (n, window, channels) given as they are are kept
    as independent samples. DataError for what cannot be a series."""
    if raw.dtype.kind not in "biuf":
        raise DataError(f"{source}: expected numeric values, got dtype {raw.dtype}")
    if raw.ndim == 3 and times is None:
        windows = raw.astype(np.float32)
        _finite(windows.reshape(-1, windows.shape[-1]), names, source)
        spec = SeriesSpec(window=windows.shape[1], channels=windows.shape[2], stride=1)
        return Dataset(windows, source, "series", series=spec, feature_names=_names(names))
    if raw.ndim != 2 or min(raw.shape) < 1:
        raise DataError(
            f"{source}: a series is a 2-D array (steps, channels), or windows (n, window, channels); got "
            f"shape {tuple(raw.shape)}"
        )
    values = raw.astype(np.float32)
    _finite(values, names, source)
    steps = len(values)
    notes: dict[str, Any] = {"steps": steps}
    if times is not None:
        assert options.time_column is not None
        parsed = parse_times(times, options.time_column, source)
        if steps >= 2:
            notes["gaps"] = find_gaps(parsed).as_dict()
    if options.window is not None:
        window, notes["window"] = options.window, {"rule": "given"}
    else:
        window, notes["window"] = choose_window(values)
    if steps < window + 1:
        raise DataError(
            f"{source}: a series of {steps} time steps is too short for windows of {window}; expected at "
            f"least {window + 1} steps"
        )
    spec = SeriesSpec(
        window=window, channels=values.shape[1], stride=options.stride, time_column=options.time_column
    )
    windows = np.ascontiguousarray(cut_windows(values, window, options.stride))
    return Dataset(
        windows, source, "series", series=spec, feature_names=_names(names), steps=values, notes=notes
    )


def _names(names: Sequence[str] | None) -> tuple[str, ...] | None:
    return tuple(names) if names is not None else None


def within_window_share(windows: Array) -> npt.NDArray[np.float64]:
    """(channels,) how much of each channel's variance over the windows (n, window, channels) lies within a
    window: the mean variance inside a window over the variance of all values (1 for a constant channel,
    which has nothing to move)."""
    values = windows.astype(np.float64)
    total = values.var(axis=(0, 1))
    inside = values.var(axis=1).mean(axis=0)
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), 1.0)


def drift_share(windows: Array, parts: int = DRIFT_PARTS) -> npt.NDArray[np.float64]:
    """(channels,) the share of the variance of each channel's window levels (window means, the windows in
    time order) that lies between `parts` consecutive parts of them: the R^2 of their part means (0 for a
    constant channel). A level that cycles within each part scores near 0; a trend or a wandering level
    that each part sees a different stretch of, near 1."""
    levels = windows.astype(np.float64).mean(axis=1)  # (n, channels)
    centred = levels - levels.mean(axis=0)
    variance = (centred**2).mean(axis=0)
    between = np.zeros_like(variance)
    for part in np.array_split(centred, min(parts, len(centred))):
        between += len(part) * part.mean(axis=0) ** 2
    between /= len(centred)
    return np.where(variance > 0, between / np.where(variance > 0, variance, 1.0), 0.0)


def centred_channels(
    windows: Array, wanted: Sequence[str] | None, names: Sequence[str] | None
) -> tuple[int, ...]:
    """The channels to read level-free: `wanted` by name (or index, for unnamed channels; empty: none), else
    (None) the drifting ones (CENTRE_BELOW, DRIFT_AT_LEAST) of the training windows (n, window, channels)
    in time order. DataError for a name that is not a channel."""
    labels = list(names) if names else [str(i) for i in range(windows.shape[2])]
    if wanted is None:
        drifting = (within_window_share(windows) < CENTRE_BELOW) & (drift_share(windows) >= DRIFT_AT_LEAST)
        return tuple(int(i) for i in np.flatnonzero(drifting))
    unknown = [w for w in wanted if w not in labels]
    if unknown:
        raise DataError(
            f"--centred-channels: no channel {', '.join(map(repr, unknown))}; the channels are "
            f"{', '.join(labels)}"
        )
    return tuple(sorted({labels.index(w) for w in wanted}))
