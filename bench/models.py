"""The benchmark's model repository: a copy of a shipped model and a synthetic 784-feature MLP autoencoder.

The synthetic model is trained for a few hundred steps by the training package on rows with a low-rank
structure (28x28 "images" in [0, 1]), so its graphs, metadata and calibration follow the real contract.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from service.contract import ModelMetadata

__all__ = ["SYNTHETIC_NAME", "build_repository", "feature_range", "synthetic_rows"]

SYNTHETIC_NAME = "mlp784"
_REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


def synthetic_rows(n: int, seed: int = 0) -> np.ndarray:
    """(n, 784) float32 in [0, 1]: a sigmoid of 8 random latent factors (something for an AE to learn)."""
    rng = np.random.default_rng(seed)
    factors = rng.standard_normal((n, 8)).astype(np.float32)  # (n, 8)
    mixing = rng.standard_normal((8, 784)).astype(np.float32)  # (8, 784)
    rows: np.ndarray = (1.0 / (1.0 + np.exp(-factors @ mixing))).astype(np.float32)  # (n, 784)
    return rows


def _train_synthetic(out: Path, steps: int) -> Path:
    from training.artifact import train_version
    from training.config import TrainConfig
    from training.data import Dataset

    config = TrainConfig(
        variant="plain",
        architecture="mlp",
        latent_dim=32,
        hidden=(256, 64),
        steps=steps,
        batch_size=64,
        patience=steps,
        seed=0,
    )
    dataset = Dataset.of_images(synthetic_rows(1000).reshape(-1, 1, 28, 28), "synthetic-784")
    trained = train_version(config, dataset, out, SYNTHETIC_NAME, test_every=0, progress=False, version=1)
    return trained.directory


def build_repository(root: Path, shipped: str, steps: int = 200) -> Path:
    """`root/models/` holding the shipped model `shipped` (version 1) and the synthetic 784 model."""
    models = root / "models"
    source = _REPO_MODELS / shipped / "1"
    if not (source / "metadata.json").is_file():
        raise SystemExit(f"shipped model {shipped!r} not found under {_REPO_MODELS} (expected {source})")
    shutil.copytree(source, models / shipped / "1")
    _train_synthetic(models, steps)
    return models


def feature_range(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (min, max) of a model's training rows, from its metadata."""
    meta = ModelMetadata.read(directory)
    return np.asarray(meta.data.feature_min, np.float32), np.asarray(meta.data.feature_max, np.float32)
