"""The training configuration: one typed dataclass, stored verbatim in each model's metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from service.contract import StepScore

__all__ = ["BodyOptions", "CodeLayout", "NormalisationKind", "TrainConfig"]

NormalisationKind = Literal["standard", "minmax", "robust", "identity"]
CodeLayout = Literal["dense", "grid"]


@dataclass(frozen=True)
class BodyOptions:
    """How a convolutional body is laid out beyond its stages' channels; an MLP takes only the defaults."""

    code: CodeLayout = "dense"
    """dense: a dense layer between the last stage and the code (a code of any width); grid: a 1x1
    convolution at the last stage's grid, the code its channels at every cell (a width that is a multiple of
    the cells), so that the code keeps where each part of the sample is."""
    stage_convs: int = 1
    """Convolutions per encoder stage: `stage_convs - 1` at the stage's input size, then the strided one; the
    decoder mirrors them, so that a sample's own size is convolved at on both ends."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run. `None` means "choose from the data" (see the field notes)."""

    variant: str = "plain"
    """The objective, a key of `training.objectives.OBJECTIVES`."""
    architecture: str | None = None
    """The network body, a key of `training.bodies.BODIES`; None -> the body made for the data's kind (mlp for
    rows, conv2d for images, conv1d for series)."""
    latent_dim: int | None = None
    """None -> chosen from the data (`training.defaults`): a fraction of a table's width, never as wide as
    the input; the objective's default on the body (16 for most) otherwise."""
    hidden: tuple[int, ...] | None = None
    """The encoder's capacity (the decoder mirrors it): hidden layer widths of an MLP, channels of each
    stage of a convolutional body; None -> the objective's default for the body."""
    code: CodeLayout | None = None
    """A convolutional body's code layout (`BodyOptions.code`); None -> the body's tuned default
    (`training.defaults`: grid for denoising on conv2d, dense otherwise)."""
    stage_convs: int | None = None
    """Convolutions per stage of a convolutional body (`BodyOptions.stage_convs`); None -> the tuned
    default."""
    epochs: int | None = None
    """Upper bound on epochs; None -> enough epochs for `steps` steps (so small data sets still train)."""
    steps: int | None = None
    """Gradient-step budget used when `epochs` is None; None -> chosen from the data and the body
    (`training.defaults`: 6000 for most on an MLP, 3000 on conv2d)."""
    batch_size: int = 64
    lr: float = 2e-3
    """Initial Adam learning rate; it decays along a cosine to `lr * lr_final_fraction`."""
    lr_final_fraction: float = 0.01
    weight_decay: float = 1e-5
    patience: int = 1500
    """Early stopping: stop after this many gradient steps without a better validation loss."""
    validation_fraction: float = 0.2
    """Share of the training samples held out for early stopping and calibration (when not cross-fitting)."""
    folds: int | None = None
    """Cross-fitting folds for calibration (`training.crossfit`): K >= 2 trains K models each without one
    fold, whose out-of-fold scores calibrate the final model trained on every row; 0 uses a validation split
    instead; None -> chosen from the data (cross-fitting for small tables)."""
    neighbours: int = 3
    """k of the memory-bank score `knn` (mean distance to the k nearest training rows), the default score
    when k > 0; 0: no such score (the default score is then `mse`)."""
    normalisation: NormalisationKind | None = None
    """None -> chosen from the data (`training.defaults`): standard for tables, minmax for images."""
    shared_scale: bool | None = None
    """One offset and scale for all values (they share units, like pixels); None -> True for image data."""
    false_alarm_rate: float = 0.01
    """Target false-alarm rate of the default anomaly threshold (per time step for a series)."""
    step_score: StepScore = "covering_max"
    """Series: how a time step's score is made from the windows covering it (`service.contract.SeriesSpec`);
    the worst mean error of the windows covering the step unless asked otherwise (it ranked SKAB's long faults
    best; short faults close together rank better under covering_mean or last: docs/time-series.md)."""
    centred_channels: tuple[str, ...] | None = None
    """Series: the channels read level-free (`service.contract.Normalisation.centred`), by name (index for
    unnamed channels); empty: none; None -> chosen from the data (`training.series.centred_channels`), and
    recorded as chosen."""
    seed: int = 0
    threads: int = 1
    """torch intra-op threads; one is fastest for these small networks."""
    hparams: dict[str, float] = field(default_factory=dict)
    """The objective's own hyper-parameters (e.g. `l1`, `rho`, `beta`), merged over its defaults."""

    def body_options(self) -> BodyOptions:
        """The body's layout, each option left as None taking BodyOptions' default."""
        defaults = BodyOptions()
        return BodyOptions(self.code or defaults.code, self.stage_convs or defaults.stage_convs)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        data = asdict(self)
        data["hidden"] = list(self.hidden) if self.hidden is not None else None
        if self.centred_channels is not None:
            data["centred_channels"] = list(self.centred_channels)
        return data
