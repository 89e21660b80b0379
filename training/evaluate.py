"""Anomaly-detection evaluation: a model version against PCA and IsolationForest on normal and anomalous rows.

`python -m training evaluate --model DIR --normal PATH --anomalies PATH` scores both sets with the version's
`model.onnx` through ONNX Runtime (the graph the service runs) and, with the same protocol, two baselines
fitted on the model's own training rows:

- PCA reconstruction error, in the model's normalised space, with k chosen on the model's validation split
  (the k with the highest held-out probabilistic-PCA log-likelihood, a choice that needs no anomalies);
- IsolationForest (scikit-learn defaults, the model's seed).

Each baseline's threshold is set like the model's, by `training.calibration.calibrate` on its scores on the
validation split: an upper confidence bound on the (1 - target false-alarm rate) quantile of those scores,
not the empirical quantile, which promises too low a false-alarm rate when the split is small.

The training rows are recovered from the metadata, from any working directory: `--train PATH` when given,
else the training file's recorded absolute path (`training.data.path`, checked against its recorded
sha256), else `data.source` (a built-in data set, or a file of that name here); they are split again with the
recorded seed, validation fraction and test_every, and must match the recorded per-feature ranges. A model
calibrated by cross-fitting has no validation split: the baselines then hold out a seeded 20% of its
training rows for their own k and thresholds. When `--normal` rows include rows the model was trained on,
a warning says how many: their scores are lower than new rows' would be, and the AUROC flatters.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.contract import METADATA_FILE, ModelMetadata, ScoreName
from training.bodies import BODIES
from training.calibration import calibrate
from training.data import BUILTIN_DATASETS, Array, DataError, Normaliser, as_rows, load_data, split_rows
from training.scoring import as_samples, score_rows

__all__ = [
    "EvaluationError",
    "MethodResult",
    "PcaScorer",
    "TrainingRows",
    "auroc",
    "average_precision",
    "choose_pca_k",
    "evaluate",
    "format_table",
    "isolation_forest_result",
    "load_rows",
    "model_result",
    "pca_result",
    "roc_curve",
    "run_evaluate",
    "save_roc_plot",
    "split_training_rows",
    "training_rows",
]

Scores = npt.NDArray[np.float64]
# Target false-alarm rate for a model recorded without calibration (the training default).
DEFAULT_FALSE_ALARM_RATE = 0.01


class EvaluationError(DataError):
    """The model version or the rows cannot be evaluated; the message says what was wrong and what was
    expected."""


def _midranks(values: Scores) -> Scores:
    """1-based ranks, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = ((starts + 1 + ends) / 2)[np.cumsum(first) - 1]
    return ranks


def auroc(normal: npt.ArrayLike, anomalies: npt.ArrayLike) -> float:
    """Area under the ROC curve (higher score = more anomalous): P(anomaly > normal), ties counting 1/2."""
    n, a = np.asarray(normal, np.float64).ravel(), np.asarray(anomalies, np.float64).ravel()
    if not len(n) or not len(a):
        raise ValueError("AUROC needs at least one normal and one anomalous score")
    ranks = _midranks(np.concatenate([n, a]))
    # Mann-Whitney U of the anomalies over the normals, divided by the number of pairs.
    return float((ranks[len(n) :].sum() - len(a) * (len(a) + 1) / 2) / (len(n) * len(a)))


def _ranked_counts(normal: npt.ArrayLike, anomalies: npt.ArrayLike) -> tuple[Scores, Scores, int, int]:
    """(true positives, false positives) at each distinct score as threshold (descending), and the sizes."""
    n, a = np.asarray(normal, np.float64).ravel(), np.asarray(anomalies, np.float64).ravel()
    scores = np.concatenate([n, a])
    labels = np.r_[np.zeros(len(n)), np.ones(len(a))]
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_tie = np.r_[scores[1:] != scores[:-1], True]
    tp = np.cumsum(labels)[last_of_tie]
    fp = np.arange(1, len(scores) + 1)[last_of_tie] - tp
    return tp, fp, len(n), len(a)


def average_precision(normal: npt.ArrayLike, anomalies: npt.ArrayLike) -> float:
    """Average precision with the anomalies as positives: sum over thresholds of (recall step) x precision."""
    tp, fp, _, n_anomalies = _ranked_counts(normal, anomalies)
    if not n_anomalies:
        raise ValueError("average precision needs at least one anomalous score")
    recall = tp / n_anomalies
    return float(np.sum(np.diff(np.r_[0.0, recall]) * tp / (tp + fp)))


def roc_curve(normal: npt.ArrayLike, anomalies: npt.ArrayLike) -> tuple[Scores, Scores]:
    """(false-positive rates, true-positive rates), from (0, 0) to (1, 1)."""
    tp, fp, n_normal, n_anomalies = _ranked_counts(normal, anomalies)
    return np.r_[0.0, fp / n_normal], np.r_[0.0, tp / n_anomalies]


@dataclass(frozen=True)
class MethodResult:
    """One method's scores on the normal and anomalous rows, and its threshold."""

    name: str
    normal: Scores
    anomalies: Scores
    threshold: float

    @property
    def auroc(self) -> float:
        return auroc(self.normal, self.anomalies)

    @property
    def average_precision(self) -> float:
        return average_precision(self.normal, self.anomalies)

    @property
    def false_alarm_rate(self) -> float:
        """Share of normal rows scored above the threshold."""
        return float(np.mean(self.normal > self.threshold))

    @property
    def detection_rate(self) -> float:
        """Share of anomalous rows scored above the threshold."""
        return float(np.mean(self.anomalies > self.threshold))


@dataclass(frozen=True)
class TrainingRows:
    """The raw rows a model version was trained and calibrated on, recovered from its metadata."""

    train: Array
    """(n_train, *input_shape)"""
    validation: Array
    """(n_validation, *input_shape)"""
    source: str
    seen: Array | None = None
    """Every row the model itself was trained or calibrated on; None: `train` and `validation`."""


def load_rows(spec: str, metadata: ModelMetadata, role: str) -> Array:
    """Load `spec` (a .npy/.csv file or a built-in data set name), check it has the model's features, and
    shape it as the model's graphs take it, (n, *input_shape)."""
    try:
        rows = load_data(spec).x
    except DataError as exc:
        raise EvaluationError(f"{role}: {exc}") from None
    try:
        return as_samples(metadata, rows)
    except ValueError:
        raise EvaluationError(
            f"{role}: {spec} has {math.prod(rows.shape[1:])} features, expected {metadata.input_dim} "
            f"(the input_dim of model {metadata.name} v{metadata.version})"
        ) from None


def _recorded_file(metadata: ModelMetadata) -> str | None:
    """The training file's recorded absolute path when it still holds the recorded bytes, else None."""
    recorded = metadata.training.get("data")
    if not isinstance(recorded, dict) or not recorded.get("path"):
        return None
    path = Path(str(recorded["path"]))
    if not path.is_file():
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return str(path) if digest == recorded.get("sha256") else None


def training_rows(metadata: ModelMetadata, train: str | None = None) -> TrainingRows:
    """Reload the model's training data (`train`, else the recorded file, else `metadata.data.source`) and
    re-create its split."""
    source = train or _recorded_file(metadata) or metadata.data.source
    if train is None and source not in BUILTIN_DATASETS and not Path(source).is_file():
        raise EvaluationError(
            f"model {metadata.name} v{metadata.version} was trained on {source!r}, which is neither a "
            "built-in data set nor a file here, and its recorded path is gone or changed; pass --train PATH "
            "with the data it was trained on"
        )
    return split_training_rows(metadata, load_rows(source, metadata, "--train"), source)


def overlapping_rows(rows: Array, training: Array) -> int:
    """How many of `rows` are exactly a row of `training`."""
    seen = {r.tobytes() for r in np.ascontiguousarray(training, np.float32)}
    return sum(r.tobytes() in seen for r in np.ascontiguousarray(rows, np.float32))


def split_training_rows(metadata: ModelMetadata, x: Array, source: str) -> TrainingRows:
    """Re-create the model's split of its training data `x` (all rows, as given to training), checked
    against the metadata: the same row count and the recorded per-feature ranges of the training rows."""
    summary = metadata.data
    try:
        validation_fraction = float(metadata.training["validation_fraction"])
        test_every = int(metadata.training.get("test_every", 5))
    except (KeyError, TypeError, ValueError):
        raise EvaluationError(
            f"model {metadata.name} v{metadata.version}: its metadata records no training "
            "validation_fraction, expected a model written by `python -m training train`"
        ) from None
    try:
        x = as_samples(metadata, x)
    except ValueError:
        raise EvaluationError(
            f"--train: {source} has rows of shape {tuple(x.shape[1:])}, expected {metadata.input_dim} "
            f"features (the input_dim of model {metadata.name} v{metadata.version})"
        ) from None
    n_rows = summary.n_train + summary.n_validation + summary.n_test
    if len(x) != n_rows:
        raise EvaluationError(
            f"--train: {source} has {len(x)} rows, expected the {n_rows} rows model {metadata.name} "
            f"v{metadata.version} was trained on"
        )
    split = split_rows(n_rows, validation_fraction, metadata.seed, test_every)
    x_train = x[split.train]
    fitted_on = x_train
    recorded = np.array([summary.feature_min, summary.feature_max], dtype=np.float32)  # (2, input_dim)
    ranges = np.stack([x_train.min(axis=0).ravel(), x_train.max(axis=0).ravel()])  # (2, input_dim)
    if not np.allclose(ranges, recorded, rtol=1e-5, atol=1e-6):
        raise EvaluationError(
            f"--train: the training rows recovered from {source} do not match model {metadata.name} "
            f"v{metadata.version} (different per-feature ranges); expected the data it was trained on"
        )
    if not len(split.validation):  # cross-fitted: the baselines hold out their own validation rows
        inner = split_rows(len(x_train), 0.2, metadata.seed, test_every=0)
        return TrainingRows(x_train[inner.train], x_train[inner.validation], source, fitted_on)
    return TrainingRows(x_train, x[split.validation], source, np.concatenate([x_train, x[split.validation]]))


class PcaScorer:
    """PCA reconstruction error: the mean squared error over features of the projection on k components."""

    def __init__(self, x: Array, k: int) -> None:
        """Fit on rows `x` (rows, features), already normalised."""
        self.mean = x.astype(np.float64).mean(axis=0)
        _, _, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        self.components = vt[:k]  # (k, features)
        self.k = k

    def score(self, x: Array) -> Scores:
        centred = x.astype(np.float64) - self.mean  # (rows, features)
        residual = centred - (centred @ self.components.T) @ self.components
        return np.asarray(np.mean(residual**2, axis=1), np.float64)


def choose_pca_k(train: Array, validation: Array) -> int:
    """The k with the highest mean log-likelihood of the validation rows under PPCA fitted on `train`.

    Reconstruction error alone always prefers more components; PPCA's likelihood charges each left-out
    direction its share of the residual variance, so it peaks where further components fit noise. Features
    constant on the training rows (blank border pixels) are left out: they would drive the residual variance
    to zero and the likelihood to infinity as k nears the rank.
    """
    live = train.std(axis=0) > 1e-6 * max(1.0, float(np.abs(train).max()))
    train, validation = train[:, live], validation[:, live]
    n, d = train.shape
    if d < 2:
        return 1
    mean = train.astype(np.float64).mean(axis=0)
    _, singular, vt = np.linalg.svd(train - mean, full_matrices=False)
    eigen = singular**2 / max(n - 1, 1)  # (min(n, d),) component variances
    total = float(eigen.sum())
    centred = validation.astype(np.float64) - mean  # (rows, d)
    projected = (centred @ vt.T) ** 2  # (rows, min(n, d))
    norms = np.sum(centred**2, axis=1)  # (rows,)
    best_k, best = 1, -np.inf
    for k in range(1, min(n, d)):
        kept = eigen[:k]
        noise = (total - kept.sum()) / (d - k)
        if noise <= 1e-12 * max(total, 1e-300) or kept[-1] <= noise:
            continue
        inside = projected[:, :k]
        distance = np.sum(inside / kept, axis=1) + (norms - inside.sum(axis=1)) / noise
        log_det = np.sum(np.log(kept)) + (d - k) * np.log(noise)
        likelihood = float(np.mean(-0.5 * (d * np.log(2 * np.pi) + log_det + distance)))
        if likelihood > best:
            best_k, best = k, likelihood
    return best_k


def _threshold(validation_scores: Scores, false_alarm_rate: float) -> float:
    return calibrate(validation_scores, false_alarm_rate).threshold


def _target_rate(metadata: ModelMetadata, score: ScoreName) -> float:
    calibration = metadata.calibration.get(score)
    return calibration.false_alarm_rate if calibration else DEFAULT_FALSE_ALARM_RATE


def model_result(
    directory: Path, metadata: ModelMetadata, normal: Array, anomalies: Array, score: ScoreName
) -> MethodResult:
    """The model's `score` through its model.onnx, at its default threshold (the recorded calibration's)."""
    if score not in metadata.scores:
        raise EvaluationError(
            f"model {metadata.name} v{metadata.version} has no score {score!r}, "
            f"expected one of {metadata.scores}"
        )
    values = [np.asarray(score_rows(directory, x).scores[score], np.float64) for x in (normal, anomalies)]
    if not all(np.all(np.isfinite(v)) for v in values):
        raise EvaluationError(
            f"model {metadata.name} v{metadata.version} gave non-finite scores; "
            "expected finite inputs of moderate size"
        )
    calibration = metadata.calibration.get(score)
    threshold = calibration.threshold if calibration else float("inf")
    label = f"{metadata.name} v{metadata.version} ({metadata.variant}, {score})"
    return MethodResult(label, values[0], values[1], threshold)


def _normaliser(metadata: ModelMetadata) -> Normaliser:
    channel_axis = BODIES[metadata.architecture].channel_axis
    return Normaliser.of(metadata.normalisation, metadata.sample_shape, channel_axis)


def pca_result(
    metadata: ModelMetadata, rows: TrainingRows, normal: Array, anomalies: Array, k: int | None = None
) -> MethodResult:
    """PCA reconstruction error in the model's normalised space (samples flattened to rows); k chosen on
    validation unless given."""
    normaliser = _normaliser(metadata)

    def normalised(x: Array) -> Array:
        return as_rows(normaliser.transform(as_samples(metadata, x)))

    train, validation = normalised(rows.train), normalised(rows.validation)
    # k = features would reconstruct every row exactly, leaving only rounding noise as the score.
    chosen = (
        choose_pca_k(train, validation)
        if k is None
        else max(1, min(k, train.shape[0] - 1, train.shape[1] - 1))
    )
    pca = PcaScorer(train, chosen)
    threshold = _threshold(pca.score(validation), _target_rate(metadata, metadata.default_score))
    name = f"PCA (k={chosen}, on validation)" if k is None else f"PCA (k={chosen})"
    return MethodResult(name, pca.score(normalised(normal)), pca.score(normalised(anomalies)), threshold)


def isolation_forest_result(
    metadata: ModelMetadata, rows: TrainingRows, normal: Array, anomalies: Array
) -> MethodResult:
    """scikit-learn's IsolationForest (its defaults) fitted on the training rows (samples flattened);
    score = -score_samples."""
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(random_state=metadata.seed, n_jobs=1).fit(as_rows(rows.train))

    def score(x: Array) -> Scores:
        return -np.asarray(forest.score_samples(as_rows(x)), np.float64)

    threshold = _threshold(score(rows.validation), _target_rate(metadata, metadata.default_score))
    return MethodResult("IsolationForest", score(normal), score(anomalies), threshold)


def evaluate(
    directory: Path,
    normal: Array,
    anomalies: Array,
    rows: TrainingRows,
    score: ScoreName | None = None,
    pca_k: tuple[int | None, ...] = (None,),
) -> list[MethodResult]:
    """The model and the baselines on the same rows; a PCA per `pca_k` entry (None: k set on validation)."""
    metadata = ModelMetadata.read(directory)
    results = [model_result(directory, metadata, normal, anomalies, score or metadata.default_score)]
    results += [pca_result(metadata, rows, normal, anomalies, k) for k in pca_k]
    results.append(isolation_forest_result(metadata, rows, normal, anomalies))
    return results


def format_table(results: list[MethodResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [
        f"{'method':<{width}}  {'AUROC':>7}  {'AP':>7}  {'false alarms':>12}  {'detection':>9}  threshold"
    ]
    for r in results:
        lines.append(
            f"{r.name:<{width}}  {r.auroc:7.4f}  {r.average_precision:7.4f}  {r.false_alarm_rate:12.2%}  "
            f"{r.detection_rate:9.2%}  {r.threshold:.6g}"
        )
    return "\n".join(lines)


def save_roc_plot(results: list[MethodResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for r in results:
        fpr, tpr = roc_curve(r.normal, r.anomalies)
        (line,) = ax.plot(fpr, tpr, drawstyle="steps-post", label=f"{r.name}: AUROC {r.auroc:.4f}")
        if np.isfinite(r.threshold):  # the operating point of its default threshold
            ax.plot(
                [r.false_alarm_rate],
                [r.detection_rate],
                marker="o",
                color=line.get_color(),
                label=f"  threshold: {r.false_alarm_rate:.1%} false alarms, {r.detection_rate:.1%} detected",
            )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("false-alarm rate (normal rows flagged)")
    ax.set_ylabel("detection rate (anomalies flagged)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_evaluate(args: argparse.Namespace) -> None:
    """`python -m training evaluate`: print the comparison table and write the ROC plot."""
    directory: Path = args.model
    if not (directory / METADATA_FILE).is_file():
        raise EvaluationError(
            f"--model: no {METADATA_FILE} in {directory}; "
            "expected a model version directory models/NAME/VERSION"
        )
    try:
        metadata = ModelMetadata.read(directory)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise EvaluationError(
            f"--model: {directory / METADATA_FILE} is not valid model metadata ({first})"
        ) from None
    normal = load_rows(args.normal, metadata, "--normal")
    anomalies = load_rows(args.anomalies, metadata, "--anomalies")
    rows = training_rows(metadata, args.train)
    seen = overlapping_rows(
        normal, rows.seen if rows.seen is not None else np.concatenate([rows.train, rows.validation])
    )
    if seen:
        print(
            f"warning: {seen} of the {len(normal)} --normal rows are rows the model was trained or "
            "calibrated on; they score lower than new rows, so the AUROC and false-alarm rate flatter it",
            file=sys.stderr,
        )
    results = evaluate(directory, normal, anomalies, rows, args.score)
    target = _target_rate(metadata, args.score or metadata.default_score)
    print(
        f"model {metadata.name} v{metadata.version}: {len(normal)} normal rows, {len(anomalies)} anomalous "
        f"rows; thresholds at a target false-alarm rate of {target:.2%}; baselines fitted on "
        f"{len(rows.train)} training rows of {rows.source}"
    )
    print(format_table(results))
    save_roc_plot(
        results,
        args.out,
        f"{metadata.name} v{metadata.version}: {Path(args.anomalies).name} vs {Path(args.normal).name}",
    )
    print(f"wrote {args.out}")
