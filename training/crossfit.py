"""Cross-fitting: out-of-fold scores for every row, to calibrate a model trained on all of them.

A validation split spends rows twice over on a small table: they are not trained on, and they are too few
to put a threshold in the tail. Cross-fitting instead splits the rows into K folds, trains K models each
without one fold, and lets each score the fold it never saw; the out-of-fold scores of all n rows then
calibrate the final model, trained on every row (`training.calibration.calibrate(..., method="cross_fit")`).
The final model has seen a little more data than each fold model, so new normal rows score, if anything, a
little lower under it than the out-of-fold scores: the thresholds err on the safe side.

API (nothing here knows what a model is):

    plan = fold_plan(n_rows, folds=5, seed=0)                  # shuffled folds, for exchangeable rows
    plan = fold_plan(n_steps, folds=5, contiguous=True, gap=w)  # time order kept: blocks of consecutive rows
    scores = cross_fit(fit_and_score, plan)                    # {score name: (n_rows,) out-of-fold scores}

`fit_and_score(train, score)` trains on the rows `train` (ascending int64 indices) and returns, per score
name, one value per row of `score` (in that order). For series, contiguous folds are blocks of consecutive
indices (time steps or window starts); `gap` further indices on each side of a block are left out of its
training rows, so that windows overlapping the scored block are not trained on (pass the window length).
The callable decides what an index is: a table row, a window start, a time step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["FitAndScore", "FoldPlan", "cross_fit", "fold_plan"]

Indices = npt.NDArray[np.int64]
FitAndScore = Callable[[Indices, Indices], Mapping[str, npt.NDArray[np.floating]]]
"""(training row indices, scored row indices) -> {score name: (len(scored),) scores}."""


@dataclass(frozen=True)
class FoldPlan:
    """Which rows each fold scores, and which rows its model trains on."""

    n_rows: int
    folds: tuple[Indices, ...]
    """Per fold, the ascending row indices it scores; together every row exactly once."""
    contiguous: bool
    gap: int = 0
    """Indices left out of a fold's training rows on each side of its block (contiguous plans)."""

    def training_rows(self, fold: int) -> Indices:
        """The rows fold `fold`'s model trains on: the others, less `gap` beside a contiguous block."""
        scored = self.folds[fold]
        keep = np.ones(self.n_rows, dtype=bool)
        if self.contiguous and len(scored):
            keep[max(0, int(scored[0]) - self.gap) : int(scored[-1]) + 1 + self.gap] = False
        keep[scored] = False
        return np.flatnonzero(keep).astype(np.int64)


def fold_plan(n_rows: int, folds: int, seed: int = 0, contiguous: bool = False, gap: int = 0) -> FoldPlan:
    """`folds` folds of `n_rows` rows, sizes within one: seeded random ones, or blocks of consecutive rows."""
    if not 2 <= folds <= n_rows:
        raise ValueError(f"cross-fitting needs 2 <= folds <= rows, got {folds} folds of {n_rows} rows")
    if gap < 0:
        raise ValueError(f"gap must be 0 or more, got {gap}")
    order = np.arange(n_rows) if contiguous else np.random.default_rng(seed).permutation(n_rows)
    parts = tuple(np.sort(p).astype(np.int64) for p in np.array_split(order, folds))
    plan = FoldPlan(n_rows, parts, contiguous, gap)
    for fold in range(folds):
        if not len(plan.training_rows(fold)):
            raise ValueError(f"fold {fold} leaves no training rows (rows {n_rows}, gap {gap})")
    return plan


def cross_fit(fit_and_score: FitAndScore, plan: FoldPlan) -> dict[str, npt.NDArray[np.float64]]:
    """Every row's out-of-fold scores, by score name: (n_rows,) each, row i scored by the model trained
    without its fold. Every fold must answer the same score names, one finite value per scored row."""
    result: dict[str, npt.NDArray[np.float64]] = {}
    for fold, scored in enumerate(plan.folds):
        answered = fit_and_score(plan.training_rows(fold), scored)
        if result and set(answered) != set(result):
            raise ValueError(f"fold {fold} answered scores {sorted(answered)}, expected {sorted(result)}")
        for name, values in answered.items():
            column = np.asarray(values, dtype=np.float64).ravel()
            if column.shape != scored.shape:
                raise ValueError(
                    f"fold {fold} answered {column.size} {name!r} scores for {scored.size} scored rows"
                )
            result.setdefault(name, np.full(plan.n_rows, np.nan))[scored] = column
    return result
