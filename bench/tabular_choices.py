"""The measurements behind the tabular defaults (`training/defaults.py`), on the development benchmark.

Same protocol as `bench/tabular.py` (a seeded 70% of the normals train; the other normals and every anomaly
test), mean AUROC over seeds, per set and over sets:

- `--what normalisation`: the memory-bank score (mean distance to the 5 nearest training rows) after standard
  scaling, robust scaling (median, IQR / 1.349), robust scaling clipped at +-5 and +-10, and a rank (empirical
  CDF) transform, against PyOD's KNN on standardised rows;
- `--what neighbours`: that score's k (mean of the k nearest distances), standard scaling;
- `--what latent`: the plain autoencoder's reconstruction error (validation split, early stopping) with a
  code of min(16, d), ceil(d / 4) and ceil(d / 2), alone and averaged with the k = 5 bank score (each log
  standardised on the validation rows). Slow: about 15 minutes on one core.

    .venv/bin/python bench/tabular_choices.py --data ../shared/data/adbench --what normalisation --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import numpy.typing as npt

from training.evaluate import auroc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tabular import split

Rows = npt.NDArray[np.float64]
Scorer = Callable[[Rows, Rows], Rows]


def _knn(train: Rows, test: Rows, k: int) -> Rows:
    from sklearn.neighbors import NearestNeighbors

    distances, _ = NearestNeighbors(n_neighbors=k).fit(train).kneighbors(test)
    return np.asarray(distances.mean(axis=1), np.float64)


def _standard(train: Rows) -> Callable[[Rows], Rows]:
    mean, std = train.mean(axis=0), train.std(axis=0)
    return lambda x: (x - mean) / np.where(std > 1e-12, std, 1.0)


def _robust(train: Rows, clip: float | None = None) -> Callable[[Rows], Rows]:
    q25, median, q75 = np.percentile(train, [25, 50, 75], axis=0)
    spread = np.where(q75 > q25, (q75 - q25) / 1.349, train.std(axis=0))
    spread = np.where(spread > 1e-12, spread, 1.0)
    if clip is None:
        return lambda x: (x - median) / spread
    return lambda x: np.clip((x - median) / spread, -clip, clip)


def _rank(train: Rows) -> Callable[[Rows], Rows]:
    levels = np.linspace(0, 1, 101)
    knots = np.quantile(train, levels, axis=0)  # (101, d)

    def transform(x: Rows) -> Rows:
        out = np.zeros_like(x)
        for j in range(x.shape[1]):
            unique, first = np.unique(knots[:, j], return_index=True)
            if len(unique) > 1:
                out[:, j] = np.interp(x[:, j], unique, levels[first], left=0.0, right=1.0)
        return out

    return transform


def _scaled(make: Callable[[Rows], Callable[[Rows], Rows]], k: int = 5) -> Scorer:
    def score(train: Rows, test: Rows) -> Rows:
        transform = make(train)
        return _knn(transform(train), transform(test), k)

    return score


def _pyod_knn(train: Rows, test: Rows) -> Rows:
    from pyod.models.knn import KNN

    transform = _standard(train)
    return np.asarray(KNN().fit(transform(train)).decision_function(transform(test)), np.float64)


def normalisation_scorers() -> dict[str, Scorer]:
    return {
        "PyOD KNN (standard)": _pyod_knn,
        "standard": _scaled(_standard),
        "robust": _scaled(_robust),
        "robust, clip 5": _scaled(lambda t: _robust(t, 5.0)),
        "robust, clip 10": _scaled(lambda t: _robust(t, 10.0)),
        "rank": _scaled(_rank),
    }


def neighbour_scorers() -> dict[str, Scorer]:
    return {"PyOD KNN (k-th of 5)": _pyod_knn} | {
        f"mean of {k}": _scaled(_standard, k) for k in (1, 2, 3, 5, 10)
    }


def _log_z(values: Rows, reference: Rows) -> Rows:
    logs, ref = np.log(values + 1e-12), np.log(reference + 1e-12)
    return (logs - ref.mean()) / (ref.std() + 1e-12)


def latent_scorers() -> dict[str, Scorer]:
    import torch

    from training.config import TrainConfig
    from training.train import train_model

    torch.set_num_threads(1)
    widths: dict[str, Callable[[int], int]] = {
        "min(16, d)": lambda d: min(16, d),
        "ceil(d/4)": lambda d: max(1, math.ceil(d / 4)),
        "ceil(d/2)": lambda d: max(1, math.ceil(d / 2)),
    }
    cache: dict[tuple[int, str], tuple[Rows, Rows]] = {}

    def both(train: Rows, test: Rows, name: str) -> tuple[Rows, Rows]:
        key = (id(test), name)
        if key not in cache:
            order = np.random.default_rng(100).permutation(len(train))
            n_val = len(train) // 5
            fit, val = train[order[n_val:]], train[order[:n_val]]
            transform = _standard(fit)
            f32 = [transform(x).astype(np.float32) for x in (fit, val, test)]
            config = TrainConfig(latent_dim=widths[name](train.shape[1]), hidden=(128,), steps=6000)
            model = train_model(config, f32[0], f32[1], progress=False).model
            with torch.no_grad():
                errors = [
                    ((model(torch.from_numpy(x)) - torch.from_numpy(x)) ** 2).mean(1).numpy() for x in f32[1:]
                ]
            bank = [_knn(transform(fit), transform(x), 5) for x in (val, test)]
            combined = _log_z(errors[1], errors[0]) + _log_z(bank[1], bank[0])
            cache[key] = (errors[1].astype(np.float64), combined)
        return cache[key]

    scorers: dict[str, Scorer] = {}
    for name in widths:
        scorers[f"mse, code {name}"] = lambda tr, te, n=name: both(tr, te, n)[0]
        scorers[f"mse + knn, code {name}"] = lambda tr, te, n=name: both(tr, te, n)[1]
    return scorers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--what", choices=["normalisation", "neighbours", "latent"], required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args(argv)
    scorers = {
        "normalisation": normalisation_scorers,
        "neighbours": neighbour_scorers,
        "latent": latent_scorers,
    }[args.what]()
    files = sorted(args.data.glob("*.npz"), key=lambda p: p.stem.split("_", 1)[-1].lower())
    table: dict[str, dict[str, float]] = {}
    for path in files:
        data = np.load(path)
        x, y = np.asarray(data["X"], np.float64), np.asarray(data["y"]).astype(np.int64)
        per_seed: dict[str, list[float]] = {}
        for seed in args.seeds:
            train_idx, test_idx = split(y, seed)
            labels = y[test_idx]
            test = x[test_idx]
            for name, scorer in scorers.items():
                values = scorer(x[train_idx], test)
                per_seed.setdefault(name, []).append(auroc(values[labels == 0], values[labels == 1]))
        table[path.stem] = {name: float(np.mean(v)) for name, v in per_seed.items()}
        print(path.stem, " ".join(f"{v:.3f}" for v in table[path.stem].values()), file=sys.stderr, flush=True)
    names = list(scorers)
    print(f"mean AUROC over seeds {args.seeds}\n")
    print("| set | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    means = [float(np.mean([table[s][n] for s in table])) for n in names]
    print("| **mean** | " + " | ".join(f"**{m:.4f}**" for m in means) + " |")
    for s, row in table.items():
        print(f"| {s} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
