"""Held-out measurements of a trained model, the same for every variant (each metric means the same thing)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.decomposition import PCA

from training.data import Array, Normaliser
from training.variants import Autoencoder, jacobian_frobenius_sq

__all__ = ["NEAR_ZERO", "held_out_metrics", "noise_std_for"]

# A code activation below this (absolute, in code units) counts as inactive.
NEAR_ZERO = 0.01
# Denoising is measured with Gaussian noise of this fraction of the data's range.
NOISE_FRACTION = 0.2


def noise_std_for(x_train: Array, image: bool) -> Array:
    """Raw-unit noise std per feature: a fraction of the global range for images (all pixels share units),
    of each feature's own range for tabular data."""
    spread = x_train.max(axis=0) - x_train.min(axis=0)
    if image:
        spread = np.full_like(spread, spread.max())
    return (NOISE_FRACTION * np.where(spread > 0, spread, 1.0)).astype(np.float32)


def _pca_reconstruct(pca: PCA, x: Array, k: int) -> Array:
    codes = (x - pca.mean_) @ pca.components_[:k].T  # (rows, k)
    return (codes @ pca.components_[:k] + pca.mean_).astype(np.float32)  # type: ignore[no-any-return]


def held_out_metrics(
    model: Autoencoder, normaliser: Normaliser, x_train: Array, x_test: Array, image: bool, seed: int = 0
) -> dict[str, float]:
    """Metrics on held-out raw rows `x_test`; PCA baselines are fitted on the raw training rows `x_train`."""
    model.eval()
    n_train, n_test = normaliser.transform(x_train), normaliser.transform(x_test)
    test = torch.from_numpy(n_test).requires_grad_(True)  # (rows, input_dim)
    z = model.encode(test)  # (rows, latent_dim)
    jacobian = jacobian_frobenius_sq(z, test)  # (rows,)
    with torch.no_grad():
        reconstruction = model(torch.from_numpy(n_test)).numpy()
        weights = sum(float((m.weight**2).sum()) for m in model.modules() if isinstance(m, torch.nn.Linear))
    codes = z.detach().numpy()
    k = model.latent_dim
    pca = PCA(n_components=min(k, *n_train.shape), svd_solver="full").fit(n_train)
    pca_mse = float(np.mean((_pca_reconstruct(pca, n_test, k) - n_test) ** 2))
    metrics = {
        "test_mse": float(np.mean((reconstruction - n_test) ** 2)),
        "test_mse_raw": float(np.mean((normaliser.inverse(reconstruction) - x_test) ** 2)),
        "pca_mse": pca_mse,
        "code_near_zero_fraction": float(np.mean(np.abs(codes) < NEAR_ZERO)),
        "code_mean_activation": float(np.mean(codes)),
        "code_mean_abs_activation": float(np.mean(np.abs(codes))),
        "jacobian_frobenius_sq": float(jacobian.mean()),
        "weights_sq_sum": weights,
    }
    metrics["mse_to_pca_ratio"] = metrics["test_mse"] / pca_mse if pca_mse > 0 else float("inf")
    metrics.update(_denoising(model, normaliser, x_train, x_test, image, seed))
    return metrics


def _denoising(
    model: Autoencoder, normaliser: Normaliser, x_train: Array, x_test: Array, image: bool, seed: int
) -> dict[str, float]:
    """Denoised-vs-clean MSE (raw units) against the noisy input's and the best PCA projection's."""
    std = noise_std_for(x_train, image)
    noisy = (x_test + np.random.default_rng(seed).normal(size=x_test.shape) * std).astype(np.float32)
    with torch.no_grad():
        denoised = normaliser.inverse(model(torch.from_numpy(normaliser.transform(noisy))).numpy())
    pca = PCA(svd_solver="full").fit(x_train)
    best_pca = min(
        float(np.mean((_pca_reconstruct(pca, noisy, k) - x_test) ** 2))
        for k in range(1, pca.n_components_ + 1)
    )
    noisy_mse = float(np.mean((noisy - x_test) ** 2))
    denoised_mse = float(np.mean((denoised - x_test) ** 2))
    return {
        "denoise_noisy_mse_raw": noisy_mse,
        "denoise_mse_raw": denoised_mse,
        "denoise_pca_best_mse_raw": best_pca,
        "denoise_to_noisy_ratio": denoised_mse / noisy_mse,
        "denoise_to_pca_ratio": denoised_mse / best_pca,
    }
