"""Series windows: how a series is cut into windows and how per-window values become per-step values.

One implementation for training and serving (numpy only, no torch, no web framework), so that the windows a
model was calibrated on are exactly the windows the service scores. A series is (T, channels); windows are
cut at stride 1 when serving, so window i covers steps i .. i + window - 1 and there are T - window + 1 of
them. `to_steps` turns any per-window, per-position value (errors, reconstructions) into one value per step
by a `StepScore` rule (see `service.contract.SeriesSpec`): scores by the model's rule, values that belong to
one step (a reconstruction) by `value_rule` of it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from service.contract import StepScore

__all__ = [
    "CAUSAL_RULES",
    "WHOLE_WINDOW_RULES",
    "cut_windows",
    "step_count",
    "to_steps",
    "value_rule",
    "window_count",
]

Array = npt.NDArray[Any]

CAUSAL_RULES: frozenset[StepScore] = frozenset({"last", "window_mean"})
"""Rules under which a step's value never changes when later steps arrive."""
WHOLE_WINDOW_RULES: frozenset[StepScore] = frozenset({"window_mean", "covering_max"})
"""Rules that give a step the mean error of a whole window (the others, an error at the step's position)."""


def value_rule(rule: StepScore) -> StepScore:
    """The rule for a value of each position (a reconstruction) under a model's score rule: its value in the
    window ending at the step for a causal rule, the mean over the windows covering it otherwise (a window
    mean or maximum would smear one step's value over its neighbours)."""
    return "last" if rule in CAUSAL_RULES else "covering_mean"


def window_count(steps: int, window: int, stride: int = 1) -> int:
    """How many whole windows a series of `steps` steps holds at `stride` (0 when it is too short)."""
    return 0 if steps < window else (steps - window) // stride + 1


def step_count(windows: int, window: int) -> int:
    """How many steps `windows` consecutive stride-1 windows cover."""
    return windows + window - 1


def cut_windows(series: Array, window: int, stride: int = 1) -> Array:
    """(T, channels) -> (n, window, channels), window i starting at step i * stride; a read-only view.

    ValueError when T < window."""
    if series.ndim != 2:
        raise ValueError(f"a series must be 2-D (steps, channels), got shape {tuple(series.shape)}")
    if series.shape[0] < window:
        raise ValueError(f"a series of {series.shape[0]} steps is shorter than the window of {window}")
    # sliding_window_view puts the window axis last: (T - window + 1, channels, window).
    view = np.lib.stride_tricks.sliding_window_view(series, window, axis=0)[::stride]
    return view.transpose(0, 2, 1)  # (n, window, channels)


def to_steps(values: Array, rule: StepScore) -> Array:
    """Per-window values of consecutive stride-1 windows -> per-step values, by `rule`.

    `values` is (n, window, *rest): the value of each window at each of its positions (e.g. the per-step
    errors, or the reconstruction). The answer is (n + window - 1, *rest).
    """
    n, window = values.shape[0], values.shape[1]
    if n == 0:
        raise ValueError("no windows to turn into steps")
    if rule == "last":
        # Step window-1+i is the last position of window i; the first steps come from the first window.
        return np.concatenate([values[0, : window - 1], values[:, -1]], axis=0)
    if rule == "window_mean":
        means = values.mean(axis=1)  # (n, *rest)
        head = np.repeat(means[:1], window - 1, axis=0)
        return np.concatenate([head, means], axis=0)
    if rule == "covering_mean":
        total = np.zeros((n + window - 1, *values.shape[2:]), dtype=np.float64)
        count = np.zeros(n + window - 1, dtype=np.float64)
        for j in range(window):  # position j of window i is step i + j
            total[j : j + n] += values[:, j]
            count[j : j + n] += 1
        return (total / count.reshape(-1, *([1] * (values.ndim - 2)))).astype(values.dtype)
    if rule == "covering_max":
        # Each window's means (n, *rest), ranked by their overall mean; step s takes the means of the
        # highest-ranked window covering it (windows s - window + 1 .. s), so that the per-channel values of a
        # step still average to its score.
        means = values.mean(axis=1)
        rank = means.reshape(n, -1).mean(axis=1)  # (n,)
        padded = np.concatenate([np.full(window - 1, -np.inf), rank, np.full(window - 1, -np.inf)])
        covering = np.lib.stride_tricks.sliding_window_view(padded, window)  # (n + window - 1, window)
        best = np.argmax(covering, axis=1) + np.arange(n + window - 1) - (window - 1)  # a window index
        worst: Array = means[best]
        return worst
    raise ValueError(f"unknown step rule {rule!r}; expected last, window_mean, covering_mean or covering_max")
