"""One training run end to end: split, train, export, calibrate, measure, draw, write the model version."""

from __future__ import annotations

import hashlib
import math
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from service.contract import (
    DataSummary,
    GraphFile,
    InputKind,
    ModelMetadata,
    ScoreCalibration,
    ScoreName,
    SeriesSpec,
)
from training.bodies import BODIES, body_for
from training.calibration import calibrate
from training.config import TrainConfig
from training.crossfit import cross_fit, fold_plan
from training.data import Array, DataError, Dataset, Normaliser, as_rows, split_rows
from training.defaults import default_score, resolve
from training.evaluate import split_training_rows, training_rows
from training.export import OPSET, export_graphs, score_output
from training.figures import (
    save_feature_errors,
    save_loss_curves,
    save_reconstructions,
    save_samples,
    save_score_histogram,
)
from training.memory import COMBINED_SCORE, KNN_SCORE, MemoryBank, ScoreCombination, ScoredModel, bank_rows
from training.metrics import held_out_metrics
from training.objectives import OBJECTIVES, Autoencoder
from training.scoring import run_graph
from training.series import (
    SeriesParts,
    centred_channels,
    per_position,
    series_folds,
    split_series,
    window_end_scores,
    windows_of,
)
from training.train import TrainResult, train_model

# Out-of-fold answers of a series' fold models carry each score twice: per window, and (this prefix) per step.
STEP_PREFIX = "step:"

__all__ = [
    "Fitted",
    "TrainedVersion",
    "calibrate_graph",
    "cross_fitted",
    "fit",
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
        values: npt.NDArray[Any] = outputs[score_output(score)]
        if series is not None:
            values = step_values(series, score, values, outputs["feature_errors"])
        calibration[score] = calibrate(values, false_alarm_rate)
    return calibration


def step_values(
    spec: SeriesSpec, score: ScoreName, values: npt.NDArray[Any], feature_errors: npt.NDArray[Any]
) -> npt.NDArray[np.float64]:
    """(n,) per-step scores of the steps n consecutive stride-1 windows end at, from the windows' (n,) values
    of `score` and their (n, window, channels) feature errors, by the spec's step rule."""
    steps = window_end_scores(per_position(spec, score, values, feature_errors), spec.step_score)
    return steps.astype(np.float64)


def cross_fitted(metadata: ModelMetadata) -> bool:
    """Whether the version's scores were calibrated out of fold (its fold models are not kept)."""
    return any(c.method == "cross_fit" for c in metadata.calibration.values())


def recalibrated(directory: Path, metadata: ModelMetadata, x_val: Array) -> ModelMetadata:
    """`metadata` with its scores calibrated again on the validation rows `x_val`, through the fused graph
    now in `directory`, at the recorded target false-alarm rate."""
    rate = float(metadata.training.get("false_alarm_rate", 0.01))
    if cross_fitted(metadata):
        raise DataError(
            f"model {metadata.name} v{metadata.version} was calibrated by cross-fitting, with no validation "
            "split to calibrate changed graphs on; expected a model trained with --folds 0"
        )
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


@dataclass(frozen=True)
class Fitted:
    """One trained model with its normaliser and memory bank, before export."""

    normaliser: Normaliser
    result: TrainResult
    scored: ScoredModel
    in_bank: npt.NDArray[np.int64]
    """Which training rows the memory bank holds (all, unless there were too many)."""

    def score(self, x: Array) -> dict[str, npt.NDArray[np.float64]]:
        """Every score of raw samples `x`, in torch, as the fused graph computes them."""
        return self.scored.score(self.normaliser.transform(x))

    @torch.no_grad()
    def feature_errors(self, x: Array) -> Array:
        """(n, *input_shape) squared errors of raw samples `x` in normalised units, as the fused graph's
        `feature_errors`."""
        self.scored.eval()
        normalised = torch.from_numpy(np.ascontiguousarray(self.normaliser.transform(x), dtype=np.float32))
        codes = self.scored.model.encode_outputs(normalised)
        reconstruction = self.scored.model.decode(codes[0])  # (n, *input_shape)
        return ((reconstruction - normalised) ** 2).numpy()


@dataclass(frozen=True)
class Layout:
    """How the samples are read: their kind, the body that reads them and its channel axis, shared units."""

    kind: InputKind
    architecture: str
    channel_axis: int
    shared: bool
    centred: tuple[int, ...] = ()
    """Series: the channels read level-free (`service.contract.Normalisation.centred`)."""


def fit(
    config: TrainConfig, x_train: Array, x_val: Array | None, layout: Layout, progress: bool = False
) -> Fitted:
    """Normalise, train and attach a memory bank of the normalised training samples (no combination yet)."""
    assert config.normalisation is not None, "resolve the configuration first"
    normaliser = Normaliser.fit(
        x_train, config.normalisation, layout.shared, layout.channel_axis, layout.centred
    )
    validation = None if x_val is None or not len(x_val) else normaliser.transform(x_val)
    result = train_model(config, normaliser.transform(x_train), validation, progress, layout.kind)
    in_bank = bank_rows(len(x_train), math.prod(x_train.shape[1:]), config.seed)
    bank = (
        MemoryBank(normaliser.transform(x_train[in_bank]), config.neighbours)
        if config.neighbours > 0
        else None
    )
    return Fitted(normaliser, result, ScoredModel(result.model, bank), in_bank)


def _file_summary(dataset: Dataset) -> dict[str, str | None]:
    """Where the rows came from, enough to find them again from any directory."""
    if dataset.path is None:
        return {"path": None, "sha256": None}
    return {"path": str(dataset.path), "sha256": hashlib.sha256(dataset.path.read_bytes()).hexdigest()}


def _new_version_directory(out: Path, name: str, version: int | None) -> Path:
    model_dir = out / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is not None:
        directory = model_dir / str(version)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir()
        return directory
    while True:
        directory = model_dir / str(next_version(model_dir))
        try:
            directory.mkdir()
            return directory
        except FileExistsError:  # another run took that version meanwhile
            continue


def _write_held_out(directory: Path, dataset: Dataset, rows: Array) -> None:
    """The test split beside the model: test.npy always (in the data's own layout), test.csv with the
    header too for named columns of rows."""
    np.save(directory / "test.npy", rows.reshape(len(rows), *dataset.sample_shape))
    if dataset.feature_names is not None and dataset.kind == "rows":
        header = ",".join(f'"{n}"' if "," in n else n for n in dataset.feature_names)
        np.savetxt(directory / "test.csv", rows, delimiter=",", header=header, comments="", fmt="%.9g")


@dataclass(frozen=True)
class Parts:
    """The samples of the three splits, (n, *input_shape) each, and how they were drawn."""

    train: Array
    validation: Array
    test: Array
    how: dict[str, object]
    ranges: SeriesParts | None = None
    """A series' contiguous step ranges of the three parts; None for independent samples."""


ROWS_SPLIT = (
    "test: rows with index % test_every == 0 (none for 0); validation: a validation_fraction of the rest, "
    "drawn with numpy default_rng(seed).permutation"
)


def split_samples(
    dataset: Dataset, input_shape: Sequence[int], validation_fraction: float, seed: int, test_every: int
) -> Parts:
    """Independent samples split as `split_rows` does; a series read as one split in time order
    (`training.series.split_series`), each part cut into its own windows (the training part at the spec's
    stride, the held-out parts at stride 1, as the service cuts them)."""
    if dataset.steps is None or dataset.series is None:
        x = dataset.x.reshape(len(dataset.x), *input_shape)  # (n, *input_shape)
        split = split_rows(len(x), validation_fraction, seed, test_every)
        return Parts(x[split.train], x[split.validation], x[split.test], how={"split": ROWS_SPLIT})
    spec = dataset.series
    ranges = split_series(len(dataset.steps), spec.window, validation_fraction, test_every)
    train, validation, test = (
        windows_of(dataset.steps, r, spec.window, spec.stride if name == "train" else 1).reshape(
            -1, *input_shape
        )
        for name, r in ranges.items()
    )
    how: dict[str, object] = {"split": "contiguous in time", "parts": ranges.as_dict()}
    return Parts(train, validation, test, how, ranges)


def non_test_samples(dataset: Dataset, test_every: int) -> int:
    """How many samples train and calibrate once the test part is held out (a series: stride-1 windows)."""
    if dataset.steps is not None and dataset.series is not None:
        steps = len(dataset.steps) - (math.ceil(len(dataset.steps) / test_every) if test_every > 0 else 0)
        return max(0, steps - dataset.series.window + 1)
    return len(dataset.x) - (len(range(0, len(dataset.x), test_every)) if test_every > 0 else 0)


def train_version(
    config: TrainConfig,
    dataset: Dataset,
    out: Path,
    name: str,
    test_every: int = 0,
    progress: bool = True,
    version: int | None = None,
) -> TrainedVersion:
    """Train `config` on `dataset` and write `out/name/<next version>/` (ONNX graphs, metadata.json, PNGs).

    The body is `config.architecture`, else the one made for the data's kind (DataError when the body cannot
    read the data). Samples with index % test_every == 0 are held out for the reported metrics and written
    beside the model (test.npy, and test.csv for named columns; none when test_every is 0). The others
    calibrate the scores: out of fold when the (resolved) configuration cross-fits (every sample also trains
    the final model), else through a validation split. A given `version` replaces that version's directory;
    by default the next free version is taken.
    """
    started = time.perf_counter()
    architecture = body_for(dataset.kind, config.architecture)
    body = BODIES[architecture]
    input_shape = body.input_shape_for(dataset.sample_shape, dataset.kind)
    n_features = math.prod(input_shape)
    cls = OBJECTIVES[config.variant]
    config = resolve(
        config,
        non_test_samples(dataset, test_every),
        input_shape,
        dataset.kind,
        cls.default_latent_dim,
        cls.default_steps,
        architecture,
    )
    config = replace(config, architecture=architecture)
    cross_fitted = bool(config.folds and config.folds >= 2)
    if cross_fitted:
        config = replace(config, validation_fraction=0.0)
    parts = split_samples(dataset, input_shape, config.validation_fraction, config.seed, test_every)
    x_train, x_val, x_test = parts.train, parts.validation, parts.test
    series = dataset.series.model_copy(update={"step_score": config.step_score}) if dataset.series else None
    shared = dataset.shares_units if config.shared_scale is None else config.shared_scale
    centred: tuple[int, ...] = ()
    if series is not None:
        centred = centred_channels(x_train, config.centred_channels, dataset.feature_names)
        labels = dataset.feature_names or [str(i) for i in range(series.channels)]
        config = replace(config, centred_channels=tuple(labels[i] for i in centred))
    elif config.centred_channels:
        raise DataError("--centred-channels is for a series (channels read level-free within each window)")
    layout = Layout(dataset.kind, architecture, body.channel_axis, shared, centred)

    # Out-of-fold (or validation) scores per sample, and (a series) per step: what calibrates.
    held_out: dict[str, npt.NDArray[np.float64]]
    held_out_steps: dict[str, npt.NDArray[np.float64]] = {}
    if cross_fitted:
        assert config.folds is not None
        if series is not None and parts.ranges is not None and dataset.steps is not None:
            # Every stride-1 window of the training part is scored once; the folds' models train on the
            # windows at the model's stride outside the gap beside the block they score.
            pool = windows_of(dataset.steps, parts.ranges.train, series.window).reshape(-1, *input_shape)
            plan = series_folds(len(pool), config.folds, series.window)
        else:
            pool = x_train
            plan = fold_plan(len(pool), min(config.folds, len(pool)), config.seed)

        first: list[tuple[Fitted, Array, Array]] = []

        def fit_and_score(train: npt.NDArray[np.int64], scored: npt.NDArray[np.int64]) -> dict[str, Array]:
            if series is not None:
                train = train[train % series.stride == 0]
            fold = fit(config, pool[train], None, layout)
            if not first:  # kept for the held-out metrics when no test split is held out
                first.append((fold, pool[train], pool[scored]))
            scores = fold.score(pool[scored])
            answered = {k: v.astype(np.float32) for k, v in scores.items()}
            if series is not None:
                errors = fold.feature_errors(pool[scored])  # (n, window, channels)
                answered |= {
                    STEP_PREFIX + k: step_values(series, k, v, errors).astype(np.float32)
                    for k, v in scores.items()
                }
            return answered

        out_of_fold = cross_fit(fit_and_score, plan)
        held_out = {k: v for k, v in out_of_fold.items() if not k.startswith(STEP_PREFIX)}
        held_out_steps = {
            k.removeprefix(STEP_PREFIX): v for k, v in out_of_fold.items() if k.startswith(STEP_PREFIX)
        }
        final = fit(config, x_train, None, layout, progress)
        if final.scored.memory is not None and series is None:
            # The bank score needs no fold models: each row against the final bank less itself. Not for
            # windows, whose overlapping neighbours would stand in for the window left out.
            normalised = final.normaliser.transform(x_train)
            held_out[KNN_SCORE] = final.scored.memory.held_out(normalised, final.in_bank)
        measured = first[0] if not len(x_test) else (final, x_train, x_test)
    else:
        final = fit(config, x_train, x_val, layout, progress)
        held_out = final.score(x_val)
        if series is not None:
            errors = final.feature_errors(x_val)  # (n, window, channels)
            held_out_steps = {k: step_values(series, k, v, errors) for k, v in held_out.items()}
        measured = (final, x_train, x_test if len(x_test) else x_val)
    if config.neighbours > 0:
        final.scored.combination = ScoreCombination.fit([held_out[s] for s in final.scored.scores])
        held_out[COMBINED_SCORE] = final.scored.combine(held_out)
        if series is not None:
            held_out_steps[COMBINED_SCORE] = step_values(
                series, COMBINED_SCORE, held_out[COMBINED_SCORE], np.empty(0)
            )
    calibrating = held_out_steps if series is not None else held_out
    model, normaliser, result = final.scored, final.normaliser, final.result
    seconds = time.perf_counter() - started

    directory = _new_version_directory(out, name, version)
    try:
        probe = x_val if len(x_val) else x_train[:256]
        graphs, parity = export_graphs(model, normaliser, directory, probe)
        if cross_fitted:
            # The bank score of rows was held out row by row (leave one out: as many folds as rows).
            rows_bank = series is None
            folds = {s: len(x_train) if s == KNN_SCORE and rows_bank else config.folds for s in model.scores}
            calibration = {
                s: calibrate(calibrating[s], config.false_alarm_rate, "cross_fit", folds[s])
                for s in model.scores
            }
        else:
            calibration = calibrate_graph(
                directory, graphs["model"], model.scores, x_val, config.false_alarm_rate, series
            )
        # Measured on rows the measured model never saw: the test split, else the validation split, else
        # (cross-fitting, no test split) the first fold, by the model trained without it.
        m_fit, m_train, m_rows = measured
        metrics = held_out_metrics(
            m_fit.scored.model, m_fit.normaliser, m_train, m_rows, dataset.shares_units, config.seed
        )
        metrics |= {f"out_of_fold_{s}_mean": float(np.mean(calibrating[s])) for s in model.scores}
        held_out_rows = x_test if len(x_test) else probe
        best = result.best_epoch
        metrics |= {
            "train_mse": result.history.train_reconstruction[best],
            "best_epoch": float(best + 1),
            "epochs_run": float(result.epochs_run),
            "train_seconds": seconds,
            "onnx_parity_max_normalised_error": parity,
        }
        if result.history.validation_reconstruction:
            metrics["validation_mse"] = result.history.validation_reconstruction[best]
        test_outputs = run_graph(directory, graphs["model"], held_out_rows)
        default = default_score(dataset.kind, config.neighbours)
        title = f"{name} v{directory.name} ({config.variant}, {architecture})"
        save_loss_curves(result.history, result.best_epoch, directory / "loss_curves.png", title)
        if len(x_test):
            _write_held_out(directory, dataset, x_test)
        if dataset.kind == "image":
            inputs, outputs, labels = _denoising_pair(model.model, normaliser, held_out_rows, config)
            save_reconstructions(
                inputs, outputs, dataset.image, directory / "reconstructions.png", title, labels
            )
        else:
            errors = test_outputs["feature_errors"]  # (n, *input_shape)
            # A series' channels are named, not its (window x channels) positions: one box per channel.
            per_feature = errors.mean(axis=1) if series is not None else as_rows(errors)
            save_feature_errors(
                per_feature,
                dataset.feature_names,
                directory / "feature_errors.png",
                f"{title}: {'test' if len(x_test) else 'training'} rows",
            )
            save_score_histogram(
                calibrating[default],
                calibration[default].threshold,
                calibration[default].false_alarm_rate,
                directory / "score_histogram.png",
                f"{title}: {default}, {'out-of-fold' if cross_fitted else 'validation'} scores",
            )
        inner = model.model
        if inner.generative:
            with torch.no_grad():
                samples = inner.sample(
                    24, torch.Generator().manual_seed(config.seed)
                ).numpy()  # (24, *input_shape)
            save_samples(normaliser.inverse(samples), dataset.image, directory / "samples.png", title)
        metadata = ModelMetadata(
            name=name,
            version=int(directory.name),
            variant=config.variant,
            kind=dataset.kind,
            architecture=architecture,
            input_dim=n_features,
            input_shape=list(input_shape),
            latent_dim=model.latent_dim,
            feature_names=list(dataset.feature_names) if dataset.feature_names else None,
            series=series,
            image=dataset.image,
            generative=inner.generative,
            graphs=graphs,
            opset=OPSET,
            normalisation=normaliser.record(),
            scores=list(model.scores),
            score_outputs={s: score_output(s) for s in model.scores},
            default_score=default,
            calibration=calibration,
            metrics=metrics,
            training=config.as_dict()
            | {
                "latent_dim": model.latent_dim,
                "hidden": list(inner.hidden),
                "hparams": inner.hp,
                "test_every": test_every,
                "data": {
                    **_file_summary(dataset),
                    "rows": len(dataset.x),
                    **parts.how,
                    **(dataset.notes or {}),
                },
            },
            seed=config.seed,
            data=DataSummary(
                source=dataset.source,
                n_features=n_features,
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


def _denoising_pair(
    model: Autoencoder, normaliser: Normaliser, rows: Array, config: TrainConfig
) -> tuple[Array, Array, tuple[str, str]]:
    """What the per-sample plot shows: (noisy, denoised) for the denoising variant, whose job that is, and
    (original, reconstruction) for the others, in raw units."""
    x = torch.from_numpy(normaliser.transform(rows[:12]))  # (12, *input_shape)
    # A variant that corrupts its input is trained to undo that: show it doing so.
    denoising = type(model).corrupt is not Autoencoder.corrupt
    with torch.no_grad():
        torch.manual_seed(config.seed)
        given = model.corrupt(x) if denoising else x
        output = model(given)
    labels = ("noisy", "denoised") if denoising else ("original", "reconstruction")
    return normaliser.inverse(given.numpy()), normaliser.inverse(output.numpy()), labels
