"""Data-dependent defaults: what a `TrainConfig` left as None becomes, as a function of the data's shape.

Each rule is justified by a measurement in `docs/tabular.md` (the development benchmark `bench/tabular.py`):

- normalisation: per-feature standard scaling for tables (robust scaling, clipping and rank transforms
  scored lower there), one shared min-max range for images (pixels share units);
- latent width: a quarter of a table's width, at least 1 (an as-wide code lets a linear model copy its
  input); for images the variant's own default, and never as wide as the input; a grid code keeps half of
  the input's values, in whole channels at every cell of its grid;
- step budget: the variant's default, less for small tables and short series, whose few samples are seen
  often enough sooner;
- on a body where an objective measured better with other defaults (`BODY_TUNED`: code width, capacity,
  step budget, its own hyper-parameters), those, each measured in `docs/images.md`;
- calibration: cross-fitting with `CROSS_FIT_FOLDS` folds when there are fewer than `CROSS_FIT_MAX_ROWS`
  rows (then every row is both trained on and calibrates), a validation split otherwise;
- default score: for tables the memory-bank distance `knn` when the bank is on (it ranks best there), else
  the reconstruction error `mse`, which is also the default for images and series.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from service.contract import InputKind, ScoreName
from training.bodies import BODIES, ConvBody
from training.config import BodyOptions, CodeLayout, TrainConfig
from training.data import DataError
from training.objectives import OBJECTIVES

__all__ = [
    "BODY_TUNED",
    "CROSS_FIT_FOLDS",
    "CROSS_FIT_MAX_ROWS",
    "EVERY_VARIANT",
    "SMALL_SERIES_STEPS",
    "SMALL_SERIES_WINDOWS",
    "SMALL_TABLE_ROWS",
    "Tuned",
    "default_score",
    "resolve",
    "tuned_for",
]

CROSS_FIT_FOLDS = 5
# Below this many (non-test) rows calibration cross-fits: a 20% validation split of 4000 rows has 800,
# enough for rates down to 0.3%; fewer rows are worth training on as well as calibrating with.
CROSS_FIT_MAX_ROWS = 4000
# Tables with fewer rows than this train for SMALL_TABLE_STEPS gradient steps (all of their rows many times).
SMALL_TABLE_ROWS = 1000
SMALL_TABLE_STEPS = 3000
TABLE_LATENT_FRACTION = 0.25
# A series with fewer windows than this trains for SMALL_SERIES_STEPS gradient steps: on SKAB's 400-step
# training parts (about 350 windows) 3000 steps ranked no better than 1000 (docs/time-series.md).
SMALL_SERIES_WINDOWS = 1000
SMALL_SERIES_STEPS = 1000
# The share of the input's values a grid code keeps by default: denoising digits, a grid code of half the
# pixels at 14x14 beat a dense code of 128 by 3.7 dB at noise std 0.1 (docs/images.md).
GRID_CODE_FRACTION = 0.5


@dataclass(frozen=True)
class Tuned:
    """An objective's defaults on one body where they differ from its own; None (or a hyper-parameter left
    out) keeps the objective's own."""

    latent_dim: int | None = None
    hidden: tuple[int, ...] | None = None
    steps: int | None = None
    hparams: Mapping[str, float] = field(default_factory=dict)
    code: CodeLayout | None = None
    stage_convs: int | None = None


# The key of a body's entry that applies to every objective (a named objective's entry refines it).
EVERY_VARIANT = "*"
BODY_TUNED: dict[str, dict[str, Tuned]] = {
    "conv2d": {
        # MNIST's 6,400 training images at batch 64 make 100 steps an epoch, and a conv2d step costs ten MLP
        # steps or more: 3,000 steps (30 epochs) keeps the shipped MNIST set to one build.
        EVERY_VARIANT: Tuned(steps=3000),
        # Noise of every std from 0 to 0.5 of the range, so that one model serves every level; a code that
        # keeps where each stroke is (a grid code at 14x14) and convolutions at the digit's own 28x28, since
        # a dense code of 128 capped what a clean digit kept; 6,000 steps, +0.7 dB over 3,000 at std 0.1.
        "denoising": Tuned(
            hidden=(32, 64),
            steps=6000,
            code="grid",
            stage_convs=2,
            hparams={"noise_std": 0.0, "noise_std_max": 0.5},
        ),
        # The exact penalty made a conv2d step on MNIST 31 times a plain one; one probe costs one pass.
        "contractive": Tuned(hparams={"jacobian_probes": 1}),
    },
}
"""Body -> objective (or EVERY_VARIANT) -> the defaults measured better there (docs/images.md)."""


def tuned_for(body: str, variant: str) -> Tuned:
    """The defaults `variant` takes on `body` beyond its own: the body's entry for every objective, refined by
    the objective's own entry."""
    entries = BODY_TUNED.get(body, {})
    every, own = entries.get(EVERY_VARIANT, Tuned()), entries.get(variant, Tuned())
    return Tuned(
        latent_dim=own.latent_dim or every.latent_dim,
        hidden=own.hidden if own.hidden is not None else every.hidden,
        steps=own.steps or every.steps,
        hparams={**every.hparams, **own.hparams},
        code=own.code or every.code,
        stage_convs=own.stage_convs or every.stage_convs,
    )


def latent_width(n_features: int, table: bool, variant_default: int) -> int:
    """The code width for samples of `n_features` values: a quarter of a table's width (at least 1), else
    the variant's default; never as wide as the input (at most n_features - 1, when that is at least 1)."""
    width = max(1, math.ceil(TABLE_LATENT_FRACTION * n_features)) if table else variant_default
    return max(1, min(width, n_features - 1))


def grid_latent_width(grid: tuple[int, ...], n_features: int) -> int:
    """A grid code's default width: GRID_CODE_FRACTION of the input's values, in whole channels (at least
    one) at every cell of `grid`."""
    cells = math.prod(grid)
    width = cells * max(1, math.floor(GRID_CODE_FRACTION * n_features / cells))
    if width >= n_features:
        raise DataError(
            f"a grid code of one channel at the {'x'.join(map(str, grid))} grid is as wide as the input "
            f"({n_features} values); expected two stages or more in --hidden, or --code dense"
        )
    return width


def resolve(
    config: TrainConfig,
    n_rows: int,
    input_shape: tuple[int, ...],
    kind: InputKind,
    variant_latent: int,
    variant_steps: int,
    body: str | None = None,
) -> TrainConfig:
    """`config` with every data-dependent None filled in for `n_rows` samples (the non-test ones) of `kind`,
    each of `input_shape` in `body`'s graphs, read by `body` (its `BODY_TUNED` entries); explicit choices
    are kept."""
    n_features = math.prod(input_shape)
    table = kind == "rows"
    small = table and n_rows < SMALL_TABLE_ROWS
    short = kind == "series" and n_rows < SMALL_SERIES_WINDOWS
    tuned = tuned_for(body, config.variant) if body is not None else Tuned()
    variant_latent, variant_steps = tuned.latent_dim or variant_latent, tuned.steps or variant_steps
    code = config.code or tuned.code or "dense"
    hidden = config.hidden if config.hidden is not None else tuned.hidden
    body_cls = BODIES.get(body or "")
    if code == "grid" and body_cls is not None and issubclass(body_cls, ConvBody):
        stages = hidden if hidden is not None else OBJECTIVES[config.variant].default_hidden(body_cls)
        grid = body_cls.stage_sizes(input_shape, stages, BodyOptions(code="grid"))[-1]
        latent = config.latent_dim or grid_latent_width(grid, n_features)
    else:
        latent = config.latent_dim or latent_width(n_features, table, variant_latent)
    return dataclasses.replace(
        config,
        latent_dim=latent,
        hidden=hidden,
        code=code,
        stage_convs=config.stage_convs or tuned.stage_convs or 1,
        hparams={**tuned.hparams, **config.hparams},
        steps=config.steps
        or (
            min(variant_steps, SMALL_TABLE_STEPS)
            if small
            else min(variant_steps, SMALL_SERIES_STEPS)
            if short
            else variant_steps
        ),
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
