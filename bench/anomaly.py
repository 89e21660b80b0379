"""Novelty-detection benchmark: the training CLI's default `plain` and `vae` against PCA and IsolationForest.

Protocol, per data set and per class c: a seeded 70% of the rows of class c is the training data (given to
`python -m training train` as a file, so the CLI's own defaults, splits and calibration apply); the other 30%
of class c are the normal test rows and every row of the other classes is an anomaly. Reported: AUROC per
class and its mean over classes, and the realised false-alarm rate on the held-out normal rows at each
method's default threshold (the model's recorded one; the baselines' set the same way on their validation
split).

    .venv/bin/python bench/anomaly.py [--quick] [--train-flags "--steps 3000"] [--out artifacts/anomaly]

Data sets: digits (10 classes, 8x8 images), and two small tabular sets whose features span very different
scales: wine (3 classes, features from ~0.1 to ~1000) and breast_cancer (2 classes, ~0.001 to ~2500).
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn import datasets

from service.contract import ModelMetadata
from training.cli import main as training_cli
from training.evaluate import (
    MethodResult,
    evaluate,
    model_result,
    training_rows,
)

VARIANTS = ("plain", "vae")
TRAIN_FRACTION = 0.7
# What the defaults must reach on this protocol: mean AUROC, and false alarms within 1.5 points of target.
TARGET_AUROC = 0.995
TARGET_FAR_TOLERANCE = 0.015


@dataclass
class Case:
    """One (data set, normal class) run: per method, its AUROC and realised false-alarm rate."""

    dataset: str
    label: int
    n_train: int
    n_normal: int
    n_anomalies: int
    auroc: dict[str, float] = field(default_factory=dict)
    far: dict[str, float] = field(default_factory=dict)
    detection: dict[str, float] = field(default_factory=dict)
    target_far: float = 0.01
    pca_k: int = 0
    """The k chosen on the validation split."""


def _load(name: str) -> tuple[np.ndarray, np.ndarray, bool]:
    bunch = getattr(datasets, f"load_{name}")()
    return np.asarray(bunch.data, np.float32), np.asarray(bunch.target), name == "digits"


def _train(variant: str, data: Path, out: Path, name: str, flags: list[str]) -> Path:
    argv = [
        "train",
        "--variant",
        variant,
        "--data",
        str(data),
        "--name",
        name,
        "--out",
        str(out),
        "--quiet",
        *flags,
    ]
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        status = training_cli(argv)
    if status != 0:
        raise SystemExit(f"training failed ({' '.join(argv)}): {captured.getvalue().strip()}")
    return out / name / "1"


def run_case(dataset: str, label: int, flags: list[str], seed: int, work: Path) -> Case:
    x, y, image = _load(dataset)
    own = np.flatnonzero(y == label)
    shuffled = np.random.default_rng(seed + label).permutation(own)
    n_train = round(TRAIN_FRACTION * len(own))
    train, normal, anomalies = x[np.sort(shuffled[:n_train])], x[np.sort(shuffled[n_train:])], x[y != label]
    data = work / f"{dataset}-{label}.npy"
    # Images go in as (rows, 8, 8), as `--data digits` would: the CLI then treats them as images.
    np.save(data, train.reshape(len(train), 8, 8) if image else train)
    case = Case(dataset, label, len(train), len(normal), len(anomalies))
    results: list[MethodResult] = []
    for variant in VARIANTS:
        directory = _train(variant, data, work / "models", f"{dataset}-{label}-{variant}", flags)
        metadata = ModelMetadata.read(directory)
        if variant == VARIANTS[0]:
            rows = training_rows(metadata, str(data))
            results += evaluate(directory, normal, anomalies, rows, pca_k=(16, None))
            case.target_far = metadata.calibration[metadata.default_score].false_alarm_rate
        else:
            results.insert(1, model_result(directory, metadata, normal, anomalies, metadata.default_score))
        for score in metadata.scores:
            if score != metadata.default_score:
                results.insert(2, model_result(directory, metadata, normal, anomalies, score))
    for r in results:
        method = _method_name(r.name)
        if r.name.startswith("PCA") and "validation" in r.name:
            case.pca_k = int(r.name.split("k=")[1].split(",")[0])
        case.auroc[method], case.far[method], case.detection[method] = (
            r.auroc,
            r.false_alarm_rate,
            r.detection_rate,
        )
    return case


def _method_name(name: str) -> str:
    """Column name of a result: "digits-3-plain v1 (plain, mse)" -> "plain (mse)", PCA by how k was set."""
    if " v1 (" in name:
        return name.split(" v1 (")[1].rstrip(")").replace(", ", " (") + ")"
    if name.startswith("PCA"):
        return "PCA (k on validation)" if "validation" in name else "PCA (k=16)"
    return name


def _mean(values: list[float]) -> float:
    return float(np.mean(values))


def tables(cases: list[Case], flags: list[str]) -> str:
    methods = list(cases[0].auroc)
    lines = [f"training flags: {' '.join(flags) or '(CLI defaults)'}", ""]
    by_set: dict[str, list[Case]] = {}
    for c in cases:
        by_set.setdefault(c.dataset, []).append(c)
    for dataset, group in by_set.items():
        labels = [str(c.label) for c in group]
        sizes = ", ".join(f"{c.label}: {c.n_train}/{c.n_normal}/{c.n_anomalies}" for c in group)
        lines += [
            f"### {dataset}: AUROC, class c normal (train/normal test/anomalies per class: {sizes})",
            "",
        ]
        lines += [f"| method | mean | {' | '.join(labels)} |", "|---" * (len(labels) + 2) + "|"]
        for m in methods:
            values = [c.auroc[m] for c in group]
            lines.append(f"| {m} | **{_mean(values):.4f}** | {' | '.join(f'{v:.4f}' for v in values)} |")
        target = group[0].target_far
        lines += [
            "",
            f"### {dataset}: realised false-alarm rate on held-out normals at the default threshold "
            f"(target {target:.0%})",
            "",
        ]
        lines += [f"| method | mean | {' | '.join(labels)} |", "|---" * (len(labels) + 2) + "|"]
        for m in methods:
            values = [c.far[m] for c in group]
            lines.append(f"| {m} | **{_mean(values):.2%}** | {' | '.join(f'{v:.1%}' for v in values)} |")
        lines += ["", f"PCA k chosen on validation: {', '.join(str(c.pca_k) for c in group)}"]
        lines += [
            "",
            "detection rate at that threshold (mean): "
            + ", ".join(f"{m} {_mean([c.detection[m] for c in group]):.1%}" for m in methods),
            "",
        ]
    digits = by_set.get("digits")
    if digits:
        plain = _mean([c.auroc["plain (mse)"] for c in digits])
        far = _mean([c.far["plain (mse)"] for c in digits])
        ok = plain >= TARGET_AUROC and abs(far - digits[0].target_far) <= TARGET_FAR_TOLERANCE
        lines.append(
            f"bar (digits, {len(digits)} classes): plain mean AUROC {plain:.4f} (>= {TARGET_AUROC}), "
            f"mean false-alarm rate {far:.2%} (target {digits[0].target_far:.0%} +- 1.5 pp): "
            f"{'met' if ok else 'NOT met'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="digits classes 0-2 and wine only")
    parser.add_argument("--train-flags", default="", help="extra flags for every `training train` run")
    parser.add_argument("--datasets", nargs="+", default=["digits", "wine", "breast_cancer"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the 70/30 split of each class")
    parser.add_argument("--out", type=Path, default=Path("artifacts/anomaly"))
    parser.add_argument("--tag", default="", help="suffix of the result files, e.g. an experiment name")
    args = parser.parse_args(argv)
    flags = shlex.split(args.train_flags)
    plan: list[tuple[str, int]] = []
    for dataset in args.datasets if not args.quick else ["digits", "wine"]:
        labels = sorted(set(_load(dataset)[1].tolist()))
        plan += [(dataset, int(c)) for c in (labels[:3] if args.quick and dataset == "digits" else labels)]
    started = time.perf_counter()
    cases: list[Case] = []
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, label in plan:
            case = run_case(dataset, label, flags, args.seed, Path(tmp))
            cases.append(case)
            print(
                f"{dataset} class {label}: "
                + "  ".join(f"{m} {v:.4f}" for m, v in case.auroc.items())
                + f"  [{time.perf_counter() - started:.0f} s]",
                file=sys.stderr,
                flush=True,
            )
    report = tables(cases, flags) + f"\n\n({time.perf_counter() - started:.0f} s)\n"
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "results" + (f"-{args.tag}" if args.tag else "") + ("-quick" if args.quick else "")
    (args.out / f"{stem}.md").write_text(report)
    payload = {"train_flags": flags, "seed": args.seed, "cases": [c.__dict__ for c in cases]}
    (args.out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out / stem}.md and .json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
