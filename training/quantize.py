"""Optional int8 dynamic quantisation of an exported model version, kept only when it pays.

`onnxruntime.quantization.quantize_dynamic` stores the weights as int8 and quantises activations at run
time. Whether that is faster depends on the CPU and the model (ONNX Runtime's issues report slowdowns on
some CPUs), so it is measured, never assumed: the quantised graphs replace the float ones only when the
fused graph is faster at batch 1 and batch 64 on this machine and the mean reconstruction error on the
given rows drifts by at most `max_drift` (1%). The metadata's sha256 entries are updated, and the
measurements are recorded in its `metrics` (`int8_*`).

    python -m training.quantize models/digits-plain/1 [--apply] [--max-drift 0.01]

Without --apply it only measures and prints the verdict.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from service.metadata import GraphFile, GraphRole, ModelMetadata
from training.data import Array, load_data
from training.export import sha256

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
    """Compare the version's fused graph with its quantised copy on `rows` (rows, input_dim)."""
    meta = ModelMetadata.read(directory)
    fp32, int8 = _session(directory / meta.graphs["model"].path), _session(quantised)
    name = fp32.get_inputs()[0].name
    x = np.ascontiguousarray(rows, dtype=np.float32)  # (rows, input_dim)
    err32, rec32 = fp32.run(["error", "reconstruction"], {name: x})
    err8, rec8 = int8.run(["error", "reconstruction"], {name: x})
    fp32_error, int8_error = float(np.mean(err32)), float(np.mean(err8))
    drift = abs(int8_error - fp32_error) / max(fp32_error, 1e-12)
    b1 = _median_us([fp32, int8], x[:1], repeats)
    b64 = _median_us([fp32, int8], np.resize(x, (64, x.shape[1])), repeats)
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
    """The training data set's rows when it can be loaded again, else uniform rows in the recorded range."""
    try:
        x = load_data(meta.data.source).x
        if x.shape[1] == meta.input_dim:
            return x[:n]
    except Exception:  # a user's file that is gone, or a synthetic source: fall back to the recorded range
        pass
    low = np.asarray(meta.data.feature_min, dtype=np.float32)
    high = np.asarray(meta.data.feature_max, dtype=np.float32)
    rng = np.random.default_rng(seed)
    rows: Array = (low + (high - low) * rng.random((n, meta.input_dim))).astype(np.float32)
    return rows


def quantise_version(
    directory: Path, rows: Array | None = None, apply: bool = False, max_drift: float = MAX_DRIFT
) -> QuantisationReport:
    """Quantise every graph of `directory`, measure, and when `apply` and it pays, replace the graphs."""
    meta = ModelMetadata.read(directory)
    rows = evaluation_rows(meta) if rows is None else rows
    with tempfile.TemporaryDirectory(prefix="ae-int8-") as tmp:
        staged = Path(tmp)
        for graph in meta.graphs.values():
            quantise_graph(directory / graph.path, staged / graph.path)
        report = evaluate(directory, rows, staged / meta.graphs["model"].path, max_drift)
        if apply and report.kept:
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
            meta.model_copy(update={"graphs": graphs, "metrics": metrics}).write(directory)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "versions", nargs="+", type=Path, help="model version directories (models/<name>/<v>)"
    )
    parser.add_argument("--apply", action="store_true", help="replace the graphs when quantisation pays")
    parser.add_argument("--max-drift", type=float, default=MAX_DRIFT, help="allowed relative error drift")
    args = parser.parse_args(argv)
    for directory in args.versions:
        report = quantise_version(directory, apply=args.apply, max_drift=args.max_drift)
        verdict = ("applied" if args.apply else "would keep") if report.kept else "not kept"
        print(f"{report.model}: {verdict}: {report.reason}")
        print(
            "  "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in asdict(report).items()
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
