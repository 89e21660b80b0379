"""One training run end to end: split, train, export, calibrate, measure, draw, write the model version."""

from __future__ import annotations

import dataclasses
import math
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path

import torch

from service.contract import (
    SCORE_OUTPUTS,
    DataSummary,
    GraphFile,
    ModelMetadata,
    Normalisation,
    ScoreCalibration,
    ScoreName,
    SeriesSpec,
)
from training.bodies import BODIES, body_for
from training.calibration import calibrate
from training.config import TrainConfig
from training.data import Array, Dataset, Normaliser, split_rows
from training.evaluate import split_training_rows, training_rows
from training.export import OPSET, export_graphs
from training.figures import save_loss_curves, save_reconstructions, save_samples
from training.metrics import held_out_metrics
from training.scoring import run_graph
from training.series import per_position, split_series, window_end_scores, windows_of
from training.train import TrainResult, train_model

__all__ = [
    "TrainedVersion",
    "calibrate_graph",
    "next_version",
    "recalibrate_version",
    "recalibrated",
    "train_version",
]


@dataclass(frozen=True)
class TrainedVersion:
    directory: Path
    metadata: ModelMetadata
    result: TrainResult


def next_version(model_dir: Path) -> int:
    """The next free integer version under `model_dir` (1 when there is none yet)."""
    taken = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(taken, default=0) + 1


def _libraries() -> dict[str, str]:
    names = ["torch", "onnx", "onnxruntime", "numpy", "scikit-learn"]
    return {"python": platform.python_version()} | {n: package_version(n) for n in names}


def calibrate_graph(
    directory: Path,
    graph: GraphFile,
    scores: Sequence[ScoreName],
    x_val: Array,
    false_alarm_rate: float,
    series: SeriesSpec | None = None,
) -> dict[ScoreName, ScoreCalibration]:
    """Each score's calibration from the validation samples, scored by the exported fused graph itself.

    For a series model `x_val` are the consecutive stride-1 windows of the validation part, and the scores
    calibrated are those of the steps they end at, made by the model's step rule as the service makes them.
    """
    outputs = run_graph(directory, graph, x_val)
    calibration: dict[ScoreName, ScoreCalibration] = {}
    for score in scores:
        values = outputs[SCORE_OUTPUTS[score]]
        if series is not None:
            positions = per_position(series, score, values, outputs["feature_errors"])
            values = window_end_scores(positions, series.step_score)
        calibration[score] = calibrate(values, false_alarm_rate)
    return calibration


@dataclass(frozen=True)
class Parts:
    """The samples of the three splits, (n, *input_shape) each, and how they were drawn."""

    train: Array
    validation: Array
    test: Array
    how: dict[str, object]


def split_samples(
    dataset: Dataset, input_shape: Sequence[int], validation_fraction: float, seed: int, test_every: int
) -> Parts:
    """Independent samples split as `split_rows` does; a series read as one split in time order
    (`training.series.split_series`), each part cut into its own windows (the training part at the spec's
    stride, the held-out parts at stride 1, as the service cuts them)."""
    if dataset.steps is None or dataset.series is None:
        x = dataset.x.reshape(len(dataset.x), *input_shape)  # (n, *input_shape)
        split = split_rows(len(x), validation_fraction, seed, test_every)
        return Parts(x[split.train], x[split.validation], x[split.test], how={"split": "rows"})
    spec = dataset.series
    ranges = split_series(len(dataset.steps), spec.window, validation_fraction, test_every)
    train, validation, test = (
        windows_of(dataset.steps, r, spec.window, spec.stride if name == "train" else 1).reshape(
            -1, *input_shape
        )
        for name, r in ranges.items()
    )
    return Parts(train, validation, test, how={"split": "contiguous in time", "parts": ranges.as_dict()})


def recalibrated(directory: Path, metadata: ModelMetadata, x_val: Array) -> ModelMetadata:
    """`metadata` with its scores calibrated again on the validation rows `x_val`, through the fused graph
    now in `directory`, at the recorded target false-alarm rate."""
    rate = next(iter(metadata.calibration.values())).false_alarm_rate if metadata.calibration else 0.01
    calibration = calibrate_graph(directory, metadata.graphs["model"], metadata.scores, x_val, rate)
    return metadata.model_copy(update={"calibration": calibration})


def recalibrate_version(directory: Path, dataset: Dataset | None = None) -> ModelMetadata:
    """Calibrate a written version again on its own validation rows (after its graphs changed, e.g. int8).

    The rows are its training data (`dataset`, else its recorded source reloaded) split again as training
    split them, and checked against the metadata (row count, per-feature ranges); DataError when they differ.
    """
    meta = ModelMetadata.read(directory)
    rows = training_rows(meta) if dataset is None else split_training_rows(meta, dataset.x, dataset.source)
    updated = recalibrated(directory, meta, rows.validation)
    updated.write(directory)
    return updated


def train_version(
    config: TrainConfig,
    dataset: Dataset,
    out: Path,
    name: str,
    test_every: int = 5,
    progress: bool = True,
    version: int | None = None,
) -> TrainedVersion:
    """Train `config` on `dataset` and write `out/name/<next version>/` (ONNX graphs, metadata.json, PNGs).

    The body is `config.architecture`, else the one made for the data's kind (DataError when the body cannot
    read the data). Samples with index % test_every == 0 are held out for the reported metrics (none when
    test_every is 0; the metrics then use the validation samples); the validation split calibrates the anomaly
    scores. A given `version` replaces that version's directory; by default the next free version is taken.
    """
    started = time.perf_counter()
    architecture = body_for(dataset.kind, config.architecture)
    config = dataclasses.replace(config, architecture=architecture)
    body = BODIES[architecture]
    input_shape = body.input_shape_for(dataset.sample_shape, dataset.kind)
    parts = split_samples(dataset, input_shape, config.validation_fraction, config.seed, test_every)
    x_train, x_val, x_test = parts.train, parts.validation, parts.test
    series = dataset.series.model_copy(update={"step_score": config.step_score}) if dataset.series else None
    shared = dataset.shares_units if config.shared_scale is None else config.shared_scale
    normaliser = Normaliser.fit(x_train, config.normalisation, shared, body.channel_axis)
    result = train_model(
        config, normaliser.transform(x_train), normaliser.transform(x_val), progress, dataset.kind
    )
    model = result.model
    seconds = time.perf_counter() - started

    model_dir = out / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is not None:
        directory = model_dir / str(version)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
    while version is None:
        directory = model_dir / str(next_version(model_dir))
        try:
            directory.mkdir()
            break
        except FileExistsError:  # another run took that version meanwhile
            continue
    try:
        graphs, parity = export_graphs(model, normaliser, directory, x_val)
        calibration = calibrate_graph(
            directory, graphs["model"], model.scores, x_val, config.false_alarm_rate, series
        )
        held_out = x_test if len(x_test) else x_val
        metrics = held_out_metrics(model, normaliser, x_train, held_out, dataset.shares_units, config.seed)
        metrics |= {
            "train_mse": result.history.train_reconstruction[result.best_epoch],
            "validation_mse": result.history.validation_reconstruction[result.best_epoch],
            "best_epoch": float(result.best_epoch + 1),
            "epochs_run": float(result.epochs_run),
            "train_seconds": seconds,
            "onnx_parity_max_normalised_error": parity,
        }
        test_outputs = run_graph(directory, graphs["model"], held_out)
        title = f"{name} v{directory.name} ({config.variant}, {architecture})"
        save_loss_curves(result.history, result.best_epoch, directory / "loss_curves.png", title)
        reconstructions = test_outputs["reconstruction"]
        save_reconstructions(
            held_out, reconstructions, dataset.image, directory / "reconstructions.png", title
        )
        if model.generative:
            with torch.no_grad():
                generator = torch.Generator().manual_seed(config.seed)
                samples = model.sample(24, generator).numpy()  # (24, *input_shape)
            save_samples(normaliser.inverse(samples), dataset.image, directory / "samples.png", title)
        metadata = ModelMetadata(
            name=name,
            version=int(directory.name),
            variant=config.variant,
            kind=dataset.kind,
            architecture=architecture,
            input_dim=math.prod(input_shape),
            input_shape=list(input_shape),
            latent_dim=model.latent_dim,
            feature_names=list(dataset.feature_names) if dataset.feature_names else None,
            series=series,
            image=dataset.image,
            generative=model.generative,
            graphs=graphs,
            opset=OPSET,
            normalisation=Normalisation(
                kind=normaliser.kind,
                offset=normaliser.offset.ravel().tolist(),
                scale=normaliser.scale.ravel().tolist(),
            ),
            scores=list(model.scores),
            default_score="mse",
            calibration=calibration,
            metrics=metrics,
            training=config.as_dict()
            | {
                "latent_dim": model.latent_dim,
                "hidden": list(model.hidden),
                "hparams": model.hp,
                "test_every": test_every,
                "data": {**parts.how, **(dataset.notes or {})},
            },
            seed=config.seed,
            data=DataSummary(
                source=dataset.source,
                n_features=math.prod(input_shape),
                n_train=len(x_train),
                n_validation=len(x_val),
                n_test=len(x_test),
                feature_min=x_train.min(axis=0).ravel().tolist(),
                feature_max=x_train.max(axis=0).ravel().tolist(),
            ),
            libraries=_libraries(),
            created_at=datetime.now(UTC),
        )
        metadata.write(directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return TrainedVersion(directory, metadata, result)
