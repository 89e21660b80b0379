"""Tabular anomaly-detection benchmark: the training CLI's defaults against PyOD and scikit-learn detectors.

Semi-supervised protocol on a folder of ADBench `.npz` files (`X`, `y`; `y == 1` the anomalies): per data set
and seed, a seeded 70% of the normal rows is the training data; the test rows are the other 30% of the
normals and every anomaly. Our model is trained through the same code path as `python -m training train
--variant plain --data FILE` (the CLI's `main`, on a .npy file of the training rows, defaults only) and
scored through its exported `model.onnx`, at its calibrated default threshold; the baselines are fitted on
the same rows, standardised, with their library defaults, at their own default thresholds (PyOD: the
contamination=0.1 quantile of the training scores; scikit-learn: `predict`).

Reported: mean and per-set AUROC and average precision, and at each method's default threshold the realised
false-alarm rate on the held-out normals and the detection rate of the anomalies. Two checks from scikit-
learn's own data follow: breast cancer (70% of the 357 benign rows train; thresholds at 1%, 2%, 5% through
the calibration's request-time mapping) and digits novelty (classes 3, 8, 9, 70% of one class as in
`bench/anomaly.py`, against PCA).

    nice -n 10 .venv/bin/python bench/tabular.py --data ../shared/data/adbench --seeds 0 1 2
    .venv/bin/python bench/tabular.py --data ../shared/data/adbench --sets 29_Pima 14_glass --seeds 0 --quick

Needs the `bench` extra (`pip install -e '.[train,bench]'`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

from service.contract import ModelMetadata
from training.cli import main as training_cli
from training.evaluate import auroc, average_precision
from training.scoring import score_rows

Rows = npt.NDArray[np.float32]
TRAIN_FRACTION = 0.7
OURS = "ours"
# Our scores reported besides the default one.
OUR_SCORES = ("mse", "knn", "combined")
BASELINES = (
    "PyOD AutoEncoder",
    "PyOD VAE",
    "PyOD ECOD",
    "PyOD KNN",
    "PyOD IForest",
    "sklearn IForest",
    "sklearn LOF",
)


def split(y: npt.NDArray[np.int64], seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(training rows: a seeded 70% of the normals, test rows: the other normals and every anomaly)."""
    normal, anomalies = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    shuffled = np.random.default_rng(seed).permutation(normal)
    n = round(TRAIN_FRACTION * len(normal))
    return np.sort(shuffled[:n]), np.r_[np.sort(shuffled[n:]), anomalies]


def train_ours(train: Rows, work: Path, name: str, shape: tuple[int, ...] | None = None) -> Path:
    """Train with the CLI's defaults on `train` (saved as .npy, images as (rows, h, w)); the version dir."""
    data = work / f"{name}.npy"
    np.save(data, train if shape is None else train.reshape(len(train), *shape))
    argv = ["train", "--variant", "plain", "--data", str(data), "--name", name, "--out", str(work), "--quiet"]
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        status = training_cli(argv)
    if status != 0:
        raise SystemExit(f"training failed ({' '.join(argv)}): {captured.getvalue().strip()}")
    return work / name / "1"


def _standardise(train: Rows) -> Callable[[Rows], Rows]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return lambda x: ((x - mean) / std).astype(np.float32)


def baselines(
    train: Rows, test: Rows, seed: int
) -> dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]]:
    """Each baseline's (scores, flags at its default threshold) on `test`, fitted on standardised `train`."""
    from pyod.models.auto_encoder import AutoEncoder
    from pyod.models.ecod import ECOD
    from pyod.models.iforest import IForest
    from pyod.models.knn import KNN
    from pyod.models.vae import VAE
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor

    scale = _standardise(train)
    xtr, xte = scale(train), scale(test)
    out: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]] = {}
    pyod = {
        "PyOD AutoEncoder": lambda: AutoEncoder(random_state=seed, verbose=0),
        "PyOD VAE": lambda: VAE(random_state=seed, verbose=0),
        "PyOD ECOD": ECOD,
        "PyOD KNN": KNN,
        "PyOD IForest": lambda: IForest(random_state=seed),
    }
    for name, make in pyod.items():
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            detector = make().fit(xtr)
            out[name] = (np.asarray(detector.decision_function(xte), np.float64), detector.predict(xte) == 1)
    forest = IsolationForest(random_state=seed).fit(xtr)
    out["sklearn IForest"] = (-forest.score_samples(xte), forest.predict(xte) == -1)
    lof = LocalOutlierFactor(novelty=True).fit(xtr)
    out["sklearn LOF"] = (-lof.score_samples(xte), lof.predict(xte) == -1)
    return out


def run_set(path: Path, seed: int, work: Path, with_baselines: bool) -> dict[str, dict[str, float]]:
    """Per method: auroc, ap, far (realised false-alarm rate) and det (detection rate) on one split."""
    data = np.load(path)
    x, y = np.asarray(data["X"], np.float32), np.asarray(data["y"]).astype(np.int64)
    train_idx, test_idx = split(y, seed)
    train, test, labels = x[train_idx], x[test_idx], y[test_idx]
    directory = train_ours(train, work, f"{path.stem}-{seed}")
    metadata = ModelMetadata.read(directory)
    scores = score_rows(directory, test).scores
    result: dict[str, dict[str, float]] = {}

    def record(method: str, values: npt.NDArray[np.float64], flags: npt.NDArray[np.bool_]) -> None:
        normal, anomalous = values[labels == 0], values[labels == 1]
        result[method] = {
            "auroc": auroc(normal, anomalous),
            "ap": average_precision(normal, anomalous),
            "far": float(np.mean(flags[labels == 0])),
            "det": float(np.mean(flags[labels == 1])),
        }

    for score in metadata.scores:
        values = np.asarray(scores[score], np.float64)
        method = OURS if score == metadata.default_score else f"{OURS} ({score})"
        record(method, values, values > metadata.calibration[score].threshold)
    result["_meta"] = {
        "n_train": float(len(train)),
        "target": metadata.calibration[metadata.default_score].false_alarm_rate,
        "folds": float(metadata.calibration[metadata.default_score].folds or 0),
    }
    if with_baselines:
        for name, (values, flags) in baselines(train, test, seed).items():
            record(name, values, flags)
    return result


def breast_cancer_check(seeds: list[int], work: Path) -> list[str]:
    """Thresholds at 1%, 2%, 5% for breast cancer benign (70% train): realised rates and detection."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x, benign = np.asarray(bunch.data, np.float32), bunch.target == 1  # scikit-learn: 1 is benign
    lines = [
        "| seed | rate | threshold | realised false alarms (held-out benign) | malignant detected |",
        "|---|---|---|---|---|",
    ]
    for seed in seeds:
        y = np.where(benign, 0, 1)
        train_idx, test_idx = split(y, seed)
        directory = train_ours(x[train_idx], work, f"breast-cancer-{seed}")
        metadata = ModelMetadata.read(directory)
        calibration = metadata.calibration[metadata.default_score]
        values = np.asarray(score_rows(directory, x[test_idx]).scores[metadata.default_score], np.float64)
        labels = y[test_idx]
        for rate in (0.01, 0.02, 0.05):
            t = calibration.threshold_for(rate)
            far, det = float(np.mean(values[labels == 0] > t)), float(np.mean(values[labels == 1] > t))
            lines.append(f"| {seed} | {rate:.0%} | {t:.4g} | {far:.2%} | {det:.1%} |")
    return lines


def digits_check(seeds: list[int], work: Path) -> list[str]:
    """Digits novelty, classes 3/8/9 (70% of one class trains): our default score against PCA."""
    from sklearn.datasets import load_digits

    from training.evaluate import pca_result, training_rows

    bunch = load_digits()
    x, y = np.asarray(bunch.data, np.float32), bunch.target
    lines = [
        "| class | seed | ours | ours (mse) | PCA (k on validation) | PCA (k=16) |",
        "|---|---|---|---|---|---|",
    ]
    totals: dict[str, list[float]] = {}
    for label in (3, 8, 9):
        for seed in seeds:
            own = np.flatnonzero(y == label)
            shuffled = np.random.default_rng(seed + label).permutation(own)
            n = round(TRAIN_FRACTION * len(own))
            train, normal, anomalies = x[np.sort(shuffled[:n])], x[np.sort(shuffled[n:])], x[y != label]
            directory = train_ours(train, work, f"digits-{label}-{seed}", shape=(8, 8))
            metadata = ModelMetadata.read(directory)
            rows = training_rows(metadata, str(work / f"digits-{label}-{seed}.npy"))
            s_n, s_a = score_rows(directory, normal).scores, score_rows(directory, anomalies).scores
            row = {
                "ours": auroc(s_n[metadata.default_score], s_a[metadata.default_score]),
                "ours (mse)": auroc(s_n["mse"], s_a["mse"]),
                "PCA (k on validation)": pca_result(metadata, rows, normal, anomalies).auroc,
                "PCA (k=16)": pca_result(metadata, rows, normal, anomalies, 16).auroc,
            }
            for k, v in row.items():
                totals.setdefault(k, []).append(v)
            lines.append(f"| {label} | {seed} | " + " | ".join(f"{v:.4f}" for v in row.values()) + " |")
    lines.append("| **mean** | | " + " | ".join(f"**{np.mean(v):.4f}**" for v in totals.values()) + " |")
    return lines


def tables(results: dict[str, list[dict[str, dict[str, float]]]]) -> list[str]:
    sets = list(results)
    methods = sorted((m for m in results[sets[0]][0] if m != "_meta"), key=lambda m: m != OURS)

    def mean(s: str, m: str, key: str) -> float:
        return float(np.mean([r[m][key] for r in results[s]]))

    lines: list[str] = []
    for key, title in (("auroc", "AUROC"), ("ap", "average precision")):
        means = {m: float(np.mean([mean(s, m, key) for s in sets])) for m in methods}
        lines += [f"### {title} (mean over seeds)", "", "| set | " + " | ".join(methods) + " |"]
        lines.append("|---" * (len(methods) + 1) + "|")
        lines.append("| **mean** | " + " | ".join(f"**{means[m]:.4f}**" for m in methods) + " |")
        for s in sets:
            lines.append(f"| {s} | " + " | ".join(f"{mean(s, m, key):.4f}" for m in methods) + " |")
        lines.append("")
    lines += ["### at each method's default threshold: realised false-alarm rate / detection rate", ""]
    lines += ["| set | n train | folds | target | " + " | ".join(methods) + " |"]
    lines.append("|---" * (len(methods) + 4) + "|")
    for s in sets:
        meta = results[s][0]["_meta"]
        cells = [f"{mean(s, m, 'far'):.2%} / {mean(s, m, 'det'):.1%}" for m in methods]
        lines.append(
            f"| {s} | {int(meta['n_train'])} | {int(meta['folds'])} | {meta['target']:.2%} | "
            + " | ".join(cells)
            + " |"
        )
    baselines = [m for m in methods if m.startswith(("PyOD", "sklearn"))]
    best = {s: max(mean(s, m, "auroc") for m in baselines) for s in sets} if baselines else {}
    if any(m.startswith("PyOD") for m in methods):
        worst = min(sets, key=lambda s: mean(s, OURS, "auroc") - best[s])
        lines += [
            "",
            f"largest gap of ours below the best baseline: {worst} "
            f"{mean(worst, OURS, 'auroc') - best[worst]:+.4f}",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder of ADBench .npz files")
    parser.add_argument("--sets", nargs="+", help="file stems to run (default: every .npz in --data)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="ours only, no baselines, no extra checks")
    parser.add_argument("--no-checks", action="store_true", help="skip the breast cancer and digits checks")
    parser.add_argument("--checks-only", action="store_true", help="only the breast cancer and digits checks")
    parser.add_argument("--out", type=Path, default=Path("artifacts/tabular"))
    parser.add_argument(
        "--report",
        nargs="+",
        type=Path,
        help="only print the tables of earlier runs' runs.jsonl files (each run is appended as it ends)",
    )
    args = parser.parse_args(argv)
    if args.report:
        saved: dict[str, list[dict[str, dict[str, float]]]] = {}
        for log in args.report:
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                saved.setdefault(entry["set"], []).append(entry["result"])
        print("\n".join(tables(dict(sorted(saved.items(), key=lambda kv: kv[0].split("_", 1)[-1].lower())))))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    files = sorted(args.data.glob("*.npz"), key=lambda p: p.stem.split("_", 1)[-1].lower())
    files = [f for f in files if not args.sets or f.stem in args.sets]
    if args.checks_only:
        files = []
    elif not files:
        raise SystemExit(f"no .npz files in {args.data} (sets {args.sets})")
    started = time.perf_counter()
    results: dict[str, list[dict[str, dict[str, float]]]] = {}
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ae-tabular-") as tmp:
        work = Path(tmp)
        for path in files:
            for seed in args.seeds:
                r = run_set(path, seed, work, not args.quick)
                results.setdefault(path.stem, []).append(r)
                with (args.out / "runs.jsonl").open("a") as runs:
                    runs.write(json.dumps({"set": path.stem, "seed": seed, "result": r}) + "\n")
                shown = "  ".join(f"{m} {v['auroc']:.3f}" for m, v in r.items() if m != "_meta")
                print(
                    f"{path.stem} seed {seed}: {shown}  [{time.perf_counter() - started:.0f} s]",
                    file=sys.stderr,
                    flush=True,
                )
        if results:
            lines += tables(results)
        if not args.quick and not args.no_checks:
            lines += ["", "### breast cancer benign (scikit-learn), 70% of 357 benign rows train", ""]
            lines += breast_cancer_check(args.seeds, work)
            lines += ["", "### digits novelty, classes 3/8/9 (AUROC)", ""]
            lines += digits_check(args.seeds, work)
    report = "\n".join(lines) + f"\n\n(seeds {args.seeds}; {time.perf_counter() - started:.0f} s)\n"
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(report)
    (args.out / "results.json").write_text(
        json.dumps({"seeds": args.seeds, "results": results}, indent=1) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
