"""Data-dependent defaults: what a `TrainConfig` left as None becomes, as a function of the data's shape.

Each rule is justified by a measurement in `docs/tabular.md` (the development benchmark `bench/tabular.py`):

- normalisation: per-feature standard scaling for tables (robust scaling, clipping and rank transforms
  scored lower there), one shared min-max range for images (pixels share units);
- latent width: a quarter of a table's width, at least 1 (an as-wide code lets a linear model copy its
  input); for images the variant's own default, and never as wide as the input;
- step budget: the variant's default, less for small tables, whose few rows are seen often enough sooner;
- calibration: cross-fitting with `CROSS_FIT_FOLDS` folds when there are fewer than `CROSS_FIT_MAX_ROWS`
  rows (then every row is both trained on and calibrates), a validation split otherwise;
- default score: for tables the memory-bank distance `knn` when the bank is on (it ranks best there), else
  the reconstruction error `mse`, which is also the default for images and series.
"""

from __future__ import annotations

import dataclasses
import math

from service.contract import InputKind, ScoreName
from training.config import TrainConfig

__all__ = ["CROSS_FIT_FOLDS", "CROSS_FIT_MAX_ROWS", "SMALL_TABLE_ROWS", "default_score", "resolve"]

CROSS_FIT_FOLDS = 5
# Below this many (non-test) rows calibration cross-fits: a 20% validation split of 4000 rows has 800,
# enough for rates down to 0.3%; fewer rows are worth training on as well as calibrating with.
CROSS_FIT_MAX_ROWS = 4000
# Tables with fewer rows than this train for SMALL_TABLE_STEPS gradient steps (all of their rows many times).
SMALL_TABLE_ROWS = 1000
SMALL_TABLE_STEPS = 3000
TABLE_LATENT_FRACTION = 0.25


def latent_width(n_features: int, table: bool, variant_default: int) -> int:
    """The code width for samples of `n_features` values: a quarter of a table's width (at least 1), else
    the variant's default; never as wide as the input (at most n_features - 1, when that is at least 1)."""
    width = max(1, math.ceil(TABLE_LATENT_FRACTION * n_features)) if table else variant_default
    return max(1, min(width, n_features - 1))


def resolve(
    config: TrainConfig,
    n_rows: int,
    n_features: int,
    kind: InputKind,
    variant_latent: int,
    variant_steps: int,
) -> TrainConfig:
    """`config` with every data-dependent None filled in for `n_rows` samples (the non-test ones) of `kind`,
    each of `n_features` values; explicit choices are kept."""
    table = kind == "rows"
    small = table and n_rows < SMALL_TABLE_ROWS
    return dataclasses.replace(
        config,
        latent_dim=config.latent_dim or latent_width(n_features, table, variant_latent),
        steps=config.steps or (min(variant_steps, SMALL_TABLE_STEPS) if small else variant_steps),
        normalisation=config.normalisation or ("standard" if table else "minmax"),
        folds=(
            config.folds
            if config.folds is not None
            else (CROSS_FIT_FOLDS if n_rows < CROSS_FIT_MAX_ROWS else 0)
        ),
    )


def default_score(kind: InputKind, neighbours: int) -> ScoreName:
    """The score `/reconstruction-error` answers when a request names none."""
    return "knn" if kind == "rows" and neighbours > 0 else "mse"
