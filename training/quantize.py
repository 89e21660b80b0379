"""Optional int8 dynamic quantisation of an exported model version, kept only when it pays.

`onnxruntime.quantization.quantize_dynamic` stores the weights as int8 and quantises activations at run
time. Whether that is faster depends on the CPU and the model (ONNX Runtime's issues report slowdowns on
some CPUs), so it is measured, never assumed: the quantised graphs replace the float ones only when the
fused graph is faster at batch 1 and batch 64 on this machine and the mean reconstruction error on the
given rows drifts by at most `max_drift` (1%). The metadata's sha256 entries are updated, the
measurements are recorded in its `metrics` (`int8_*`), and the scores are calibrated again through the int8
graphs on the version's validation rows (its training data split again as training split it), since the
int8 graphs score a little differently from the float ones.

    python -m training.quantize models/digits-plain/1 [--apply] [--max-drift 0.01] [--train PATH]

Without --apply it only measures and prints the verdict. --apply needs the training data: its recorded
source reloaded, or `--train PATH` when that is not a built-in data set or a file here.
"""

from __future__ import annotations

import logging
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from service.contract import METADATA_FILE, GraphFile, GraphRole, ModelMetadata
from training.arguments import OneLineParser, number
from training.artifact import cross_fitted, recalibrated
from training.data import Array, DataError, load_data
from training.evaluate import load_rows, split_training_rows, training_rows
from training.export import sha256
from training.scoring import as_samples

__all__ = ["QuantisationReport", "evaluate", "main", "quantise_version"]

MAX_DRIFT = 0.01


@dataclass(frozen=True)
class QuantisationReport:
    model: str
    fp32_us_b1: float
    int8_us_b1: float
    fp32_us_b64: float
    int8_us_b64: float
    fp32_error: float
    """Mean per-sample reconstruction error (the graph's `error` output) on the rows, float graphs."""
    int8_error: float
    drift: float
    """|int8_error - fp32_error| / fp32_error."""
    max_abs_reconstruction_diff: float
    """Largest difference between the two graphs' reconstructions, in raw units."""
    kept: bool
    reason: str

    @property
    def speedup_b1(self) -> float:
        return self.fp32_us_b1 / self.int8_us_b1

    @property
    def speedup_b64(self) -> float:
        return self.fp32_us_b64 / self.int8_us_b64


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _median_us(sessions: Sequence[ort.InferenceSession], x: Array, repeats: int) -> list[float]:
    """Median microseconds per run of each session on x, interleaved so that machine noise hits all alike."""
    name = sessions[0].get_inputs()[0].name
    times: list[list[float]] = [[] for _ in sessions]
    number = max(1, 2000 // max(1, x.shape[0]))
    for _ in range(repeats):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            for _ in range(number):
                s.run(["reconstruction"], {name: x})
            times[i].append((time.perf_counter() - start) / number * 1e6)
    return [statistics.median(t) for t in times]


def quantise_graph(source: Path, target: Path) -> None:
    """int8 weights (signed, per tensor), activations quantised at run time."""
    # quantize_dynamic logs a pre-processing hint through the root logger on every call; these MLPs need none.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def evaluate(
    directory: Path, rows: Array, quantised: Path, max_drift: float = MAX_DRIFT, repeats: int = 7
) -> QuantisationReport:
    """Compare the version's fused graph with its quantised copy on `rows` (n, *input_shape, or flattened)."""
    meta = ModelMetadata.read(directory)
    fp32, int8 = _session(directory / meta.graphs["model"].path), _session(quantised)
    name = fp32.get_inputs()[0].name
    x = np.ascontiguousarray(as_samples(meta, rows), dtype=np.float32)  # (n, *input_shape)
    err32, rec32 = fp32.run(["error", "reconstruction"], {name: x})
    err8, rec8 = int8.run(["error", "reconstruction"], {name: x})
    fp32_error, int8_error = float(np.mean(err32)), float(np.mean(err8))
    drift = abs(int8_error - fp32_error) / max(fp32_error, 1e-12)
    b1 = _median_us([fp32, int8], x[:1], repeats)
    b64 = _median_us([fp32, int8], np.resize(x, (64, *x.shape[1:])), repeats)
    faster = b1[1] < b1[0] and b64[1] < b64[0]
    if not faster:
        reason = f"not faster here (speed-up {b1[0] / b1[1]:.2f}x at batch 1, {b64[0] / b64[1]:.2f}x at 64)"
    elif drift > max_drift:
        reason = f"reconstruction error drifts {drift:.2%}, over the {max_drift:.0%} allowed"
    else:
        reason = f"{b1[0] / b1[1]:.2f}x faster at batch 1, {b64[0] / b64[1]:.2f}x at 64, drift {drift:.2%}"
    return QuantisationReport(
        model=f"{meta.name} v{meta.version}",
        fp32_us_b1=b1[0],
        int8_us_b1=b1[1],
        fp32_us_b64=b64[0],
        int8_us_b64=b64[1],
        fp32_error=fp32_error,
        int8_error=int8_error,
        drift=drift,
        max_abs_reconstruction_diff=float(np.max(np.abs(rec32 - rec8))),
        kept=faster and drift <= max_drift,
        reason=reason,
    )


def evaluation_rows(meta: ModelMetadata, n: int = 512, seed: int = 0) -> Array:
    """The training data set's samples when it can be loaded again, else uniform samples in the recorded
    range; (n, *input_shape)."""
    try:
        return as_samples(meta, load_data(meta.data.source).x[:n])
    except Exception:  # a user's file that is gone, or a synthetic source: fall back to the recorded range
        pass
    low = np.asarray(meta.data.feature_min, dtype=np.float32)
    high = np.asarray(meta.data.feature_max, dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows: Array = (low + (high - low) * rng.random((n, meta.input_dim))).astype(np.float32)
    return rows.reshape(n, *meta.sample_shape)


def quantise_version(
    directory: Path, rows: Array | None = None, apply: bool = False, max_drift: float = MAX_DRIFT
) -> QuantisationReport:
    """Quantise every graph of `directory`, measure, and when `apply` and it pays, replace the graphs and
    calibrate the scores again through them.

    `rows` are the model's training data (all rows, as given to training): the drift is measured on them and
    their validation split, rebuilt and checked as `training.evaluate.split_training_rows` does, calibrates
    the int8 graphs. None: the recorded source reloaded (with `apply`, DataError up front when it cannot be).
    """
    meta = ModelMetadata.read(directory)
    training = training_rows(meta) if apply and rows is None else None
    rows = evaluation_rows(meta) if rows is None else rows
    with tempfile.TemporaryDirectory(prefix="ae-int8-") as tmp:
        staged = Path(tmp)
        for graph in meta.graphs.values():
            quantise_graph(directory / graph.path, staged / graph.path)
        report = evaluate(directory, rows, staged / meta.graphs["model"].path, max_drift)
        if report.kept and cross_fitted(meta):
            # Out-of-fold scores came from float fold models that are not kept: no rows to recalibrate on.
            report = replace(
                report,
                kept=False,
                reason=f"{report.reason}, but the scores were calibrated by cross-fitting and cannot be "
                "recalibrated on int8 graphs (train with --folds 0 to quantise)",
            )
        if apply and report.kept:
            # Checked before any file is replaced, so a refusal leaves the float version intact.
            validation = (training or split_training_rows(meta, rows, meta.data.source)).validation
            graphs: dict[GraphRole, GraphFile] = {}
            for role, graph in meta.graphs.items():
                shutil.copyfile(staged / graph.path, directory / graph.path)
                graphs[role] = graph.model_copy(update={"sha256": sha256(directory / graph.path)})
            metrics = meta.metrics | {
                "int8_quantised": 1.0,
                "int8_speedup_b1": report.speedup_b1,
                "int8_speedup_b64": report.speedup_b64,
                "int8_error_drift": report.drift,
            }
            updated = meta.model_copy(update={"graphs": graphs, "metrics": metrics})
            recalibrated(directory, updated, validation).write(directory)
    return report


def _read_metadata(directory: Path) -> ModelMetadata:
    """The version's metadata, or DataError saying what is missing or invalid."""
    if not (directory / METADATA_FILE).is_file():
        raise DataError(
            f"no {METADATA_FILE} in {directory}; expected a model version directory models/NAME/VERSION"
        )
    try:
        return ModelMetadata.read(directory)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{directory / METADATA_FILE} is not valid model metadata ({first})") from None


def _quantise_one(directory: Path, apply: bool, max_drift: float, train: str | None) -> None:
    meta = _read_metadata(directory)
    rows = load_rows(train, meta, "--train") if train is not None else None
    report = quantise_version(directory, rows, apply=apply, max_drift=max_drift)
    verdict = ("applied" if apply else "would keep") if report.kept else "not kept"
    print(f"{report.model}: {verdict}: {report.reason}")
    print(
        "  "
        + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in asdict(report).items())
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Bad input is one line on stderr (status 2), never a traceback."""
    parser = OneLineParser(prog="python -m training.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "versions", nargs="+", type=Path, help="model version directories (models/<name>/<v>)"
    )
    parser.add_argument("--apply", action="store_true", help="replace the graphs when quantisation pays")
    parser.add_argument(
        "--max-drift",
        type=number(float, 0.0, 1.0),
        default=MAX_DRIFT,
        help=f"allowed relative drift of the mean reconstruction error, in [0, 1] (default {MAX_DRIFT})",
    )
    parser.add_argument(
        "--train",
        help="the data the model was trained on, when its recorded data.source cannot be reloaded",
    )
    args = parser.parse_args(argv)
    for directory in args.versions:
        try:
            _quantise_one(directory, args.apply, args.max_drift, args.train)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
