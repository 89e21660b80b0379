"""SKAB (the Skoltech Anomaly Benchmark) with the training CLI's defaults and the service's default threshold.

SKAB's protocol: for each of its 34 labelled experiments, train on the first 400 rows (anomaly-free) and test
on the rest; point-wise F1, false-alarm rate (FAR: the share of normal test points flagged) and missed-alarm
rate (MAR: the share of anomalous test points not flagged), over all experiments' test points together.

Each experiment's first 400 rows go to `python -m training train` as a file, with only what says how to
read it (`--time-column datetime --drop-columns anomaly,changepoint`) and that all 400 rows train
(`--test-every 0`, the protocol's split): the window, the step rule, the centred channels, the model and its
calibration are the CLI's defaults for a series. The test rows are then scored through the service's core
(`service.core`: the series cut into windows and each step scored exactly as `/reconstruction-error` does),
and a step is flagged where the service flags it, at the model's default threshold.

    .venv/bin/python bench/skab.py --data ../shared/data/skab [--variants plain] [--flat] [--only 4]
        [--train-flags "--window 32"] [--out artifacts/skab] [--jobs 2]

`--flat` also runs the windowless baseline: the same rows read as independent rows (`--kind rows`), an MLP
over one time step, as SKAB's "Vanilla AE". Results: a Markdown table beside SKAB's leaderboard, and one JSON
line per experiment with its counts, threshold and training time (`--out`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from service.core.inputs import from_array
from service.core.runtime import OnnxModel
from service.core.tasks import TASKS, Call, ScoreOptions
from training.cli import main as training_cli
from training.data import read_table

TRAIN_ROWS = 400
TIME_COLUMN = "datetime"
LABELS = ("anomaly", "changepoint")
# SKAB's outlier-detection leaderboard (its README): F1, FAR %, MAR %.
LEADERBOARD = [
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("LSTM-VAE", 0.56, 9.13, 55.03),
    ("Vanilla AE (flat, no windows)", 0.39, 2.59, 75.15),
    ("Isolation forest", 0.29, 2.56, 82.89),
]
BEST_AE = LEADERBOARD[0]
MAX_STEPS = 100_000


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, flagged: npt.NDArray[np.bool_], truth: npt.NDArray[np.bool_]) -> Counts:
        self.tp += int(np.sum(flagged & truth))
        self.fp += int(np.sum(flagged & ~truth))
        self.fn += int(np.sum(~flagged & truth))
        self.tn += int(np.sum(~flagged & ~truth))
        return self

    def __iadd__(self, other: Counts) -> Counts:
        for name in ("tp", "fp", "fn", "tn"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(1, 2 * self.tp + self.fp + self.fn)

    @property
    def far(self) -> float:
        return 100 * self.fp / max(1, self.fp + self.tn)

    @property
    def mar(self) -> float:
        return 100 * self.fn / max(1, self.fn + self.tp)


@dataclass
class Experiment:
    """One experiment file: its test counts, the threshold used and what training took."""

    name: str
    method: str
    counts: Counts
    auroc: float
    """Of the test steps' scores against their labels: how well they rank, whatever the threshold."""
    threshold: float
    at_margins: dict[str, Counts]
    """The counts at multiples of the default threshold (`--margins`), by multiple."""
    window: int | None
    step_score: str | None
    train_seconds: float


def experiments(root: Path) -> list[Path]:
    """The labelled experiment files (every CSV but the anomaly-free run), in a stable order."""
    files = sorted(p for p in root.rglob("*.csv") if "anomaly-free" not in p.parts)
    if not files:
        raise SystemExit(f"no SKAB experiment files under {root} (expected <root>/valve1/0.csv and so on)")
    return files


def _train(argv: list[str]) -> float:
    """Run `python -m training train` in-process; its wall time in seconds."""
    captured = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        status = training_cli(argv)
    if status != 0:
        raise SystemExit(f"training failed ({' '.join(argv)}): {captured.getvalue().strip()}")
    return time.perf_counter() - started


def _flags(path: Path, model: str, flat: bool) -> list[str]:
    # The protocol trains on all of the first 400 rows: no test part held out of them (`--test-every 0`).
    if flat:
        return [
            "--kind", "rows", "--drop-columns", ",".join([TIME_COLUMN, *LABELS]), "--architecture", "mlp",
            "--test-every", "0",
        ]  # fmt: skip
    return ["--time-column", TIME_COLUMN, "--drop-columns", ",".join(LABELS), "--test-every", "0"]


def run_experiment(
    path: Path,
    root: Path,
    variant: str,
    flat: bool,
    flags: list[str],
    work: Path,
    scores: Path | None,
    margins: tuple[float, ...] = (),
) -> Experiment:
    table = read_table(path)
    assert table.names is not None, f"{path}: expected a header row"
    name = str(path.relative_to(root).with_suffix("")).replace("/", "-")
    train = work / f"{name}.csv"
    header = ";".join(table.names)
    train.write_text("\n".join([header, *(";".join(row) for row in table.rows[:TRAIN_ROWS])]) + "\n")
    model = f"skab-{name}-{variant}{'-flat' if flat else ''}"
    argv = ["train", "--variant", variant, "--data", str(train), "--name", model, "--out", str(work)]
    seconds = _train([*argv, *_flags(path, model, flat), "--quiet", *flags])
    directory = work / model / "1"
    onnx = OnnxModel.load(directory)
    meta = onnx.metadata
    assert meta.feature_names is not None
    test = table.numbers([table.column(n) for n in meta.feature_names])[TRAIN_ROWS:]  # (steps, channels)
    truth = table.numbers([table.column("anomaly")])[TRAIN_ROWS:, 0] > 0.5
    samples = from_array(onnx, test, "inputs", MAX_STEPS)
    answer = Call(TASKS["reconstruction_error"], onnx, ScoreOptions(), samples).run_now()
    flagged = np.asarray(answer.tensors["anomalies"], dtype=bool)
    assert flagged.shape == truth.shape, (flagged.shape, truth.shape)
    errors = np.asarray(answer.tensors["errors"], dtype=np.float64)
    threshold = float(answer.facts["threshold"])
    if scores is not None:
        # The training rows' own scores beside the test's: how far the test part drifts from what trained.
        seen = table.numbers([table.column(n) for n in meta.feature_names])[:TRAIN_ROWS]
        fitted = Call(
            TASKS["reconstruction_error"], onnx, ScoreOptions(), from_array(onnx, seen, "inputs", MAX_STEPS)
        ).run_now()
        scores.mkdir(parents=True, exist_ok=True)
        np.savez(
            scores / f"{model}.npz",
            errors=answer.tensors["errors"],
            truth=truth,
            train_errors=fitted.tensors["errors"],
            threshold=threshold,
        )
    return Experiment(
        name=name,
        method=f"{variant}{' (flat MLP, windowless)' if flat else ''}",
        counts=Counts().add(flagged, truth),
        auroc=float(roc_auc_score(truth, errors)),
        threshold=threshold,
        at_margins={f"{m:g}": Counts().add(errors > m * threshold, truth) for m in margins},
        window=meta.series.window if meta.series else None,
        step_score=meta.series.step_score if meta.series else None,
        train_seconds=seconds,
    )


def _run(job: tuple[Path, Path, str, bool, list[str], Path, Path | None, tuple[float, ...]]) -> Experiment:
    return run_experiment(*job)


def table(results: dict[str, list[Experiment]]) -> str:
    lines = [
        "| method | F1 | FAR % | MAR % | mean AUROC | train s per experiment (median) |",
        "|---|---|---|---|---|---|",
    ]
    for method, runs in results.items():
        total = Counts()
        for run in runs:
            total += run.counts
        seconds = float(np.median([r.train_seconds for r in runs]))
        auroc = float(np.mean([r.auroc for r in runs]))
        figures = f"{total.f1:.2f} | {total.far:.2f} | {total.mar:.2f} | {auroc:.3f} | {seconds:.0f}"
        lines.append(f"| **{method}** (this project) | {figures} |")
    for method, f1, far, mar in LEADERBOARD:
        lines.append(f"| {method} (SKAB leaderboard) | {f1:.2f} | {far:.2f} | {mar:.2f} | | |")
    return "\n".join(lines)


def verdict(method: str, runs: list[Experiment]) -> str:
    total = Counts()
    for run in runs:
        total += run.counts
    _, f1, far, mar = BEST_AE
    met = total.f1 > f1 and total.far < far and total.mar < mar
    better = "better than Conv-AE on all three" if met else "NOT better on all three"
    return (
        f"{method}: F1 {total.f1:.3f} (> {f1}), FAR {total.far:.2f}% (< {far}), "
        f"MAR {total.mar:.2f}% (< {mar}) over {len(runs)} experiments: {better}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--data", type=Path, required=True, help="SKAB's data/ folder (valve1/, valve2/, other/)"
    )
    parser.add_argument("--variants", nargs="+", default=["plain"], help="objectives to run (default plain)")
    parser.add_argument("--flat", action="store_true", help="also the windowless MLP over single time steps")
    parser.add_argument("--only", type=int, help="every n-th experiment only (a quick look)")
    parser.add_argument("--train-flags", default="", help="extra flags for every `training train` run")
    parser.add_argument("--out", type=Path, default=Path("artifacts/skab"))
    parser.add_argument("--keep-scores", action="store_true", help="save each experiment's per-step scores")
    parser.add_argument("--jobs", type=int, default=1, help="experiments trained at once (one core each)")
    parser.add_argument(
        "--margins",
        default="",
        help="also count the flags at these multiples of each model's default threshold, e.g. 1.25,1.5,2",
    )
    args = parser.parse_args(argv)
    files = experiments(args.data)[:: args.only or 1]
    flags = shlex.split(args.train_flags)
    margins = tuple(float(m) for m in args.margins.split(",") if m.strip())
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [(v, False) for v in args.variants] + ([("plain", True)] if args.flat else [])
    results: dict[str, list[Experiment]] = {}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log = args.out / f"skab-{stamp}.jsonl"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skab-") as tmp, ProcessPoolExecutor(max(1, args.jobs)) as pool:
        scores = args.out / "scores" if args.keep_scores else None
        work = [
            (path, args.data, variant, flat, flags, Path(tmp), scores, margins)
            for variant, flat in runs
            for path in files
        ]
        for result in pool.map(_run, work):
            results.setdefault(result.method, []).append(result)
            c = result.counts
            print(
                f"{result.method:>10} {result.name:<12} FAR {100 * c.fp / max(1, c.fp + c.tn):5.1f}% "
                f"MAR {100 * c.fn / max(1, c.fn + c.tp):5.1f}%  AUROC {result.auroc:.3f}  "
                f"window {result.window} "
                f"train {result.train_seconds:.0f}s",
                flush=True,
            )
            with log.open("a") as handle:
                handle.write(json.dumps({**asdict(result), "flags": flags}) + "\n")
    print()
    print(
        f"SKAB, {len(files)} experiments, flags: {' '.join(flags) or '(CLI defaults)'}, "
        f"{time.perf_counter() - started:.0f} s"
    )
    print(table(results))
    for method, method_runs in results.items():
        print(verdict(method, method_runs))
        for margin in margins:
            total = Counts()
            for run in method_runs:
                total += run.at_margins[f"{margin:g}"]
            print(
                f"  at {margin:g} x the default threshold: F1 {total.f1:.3f}, FAR {total.far:.2f}%, "
                f"MAR {total.mar:.2f}%"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
