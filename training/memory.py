"""Scores beyond reconstruction error, composed around a trained model at export time.

- ``knn``: a row's mean Euclidean distance, in the normalised space, to its `k` nearest rows of a memory
  bank of normalised training rows (all of them, or a seeded subset when they exceed `MAX_BANK_VALUES`). The
  bank is a constant of the fused graph, so the service computes the score like any other, with no state.
- ``combined``: the mean over the other scores of ((log(score + eps) - centre) / spread), each score's
  centre and spread those of its log on held-out normal rows (out-of-fold or validation scores): a
  combination in which no score dominates by its units, and whose parts stay monotone.

`ScoredModel` wraps an `Autoencoder` and answers what the export reads (`scores`, `encoder_outputs`,
`encode_outputs`, `decode`, `extra_scores`): the variant classes know nothing of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from service.contract import ScoreName
from training.data import Array
from training.objectives import Autoencoder

__all__ = ["COMBINED_SCORE", "KNN_SCORE", "MAX_BANK_VALUES", "MemoryBank", "ScoreCombination", "ScoredModel"]

KNN_SCORE: ScoreName = "knn"
COMBINED_SCORE: ScoreName = "combined"
# The bank holds at most this many values (rows x features, float64: 8 MiB), so the graph stays small and a
# request row costs at most ~1M multiply-adds.
MAX_BANK_VALUES = 2**20


def bank_rows(n_rows: int, n_features: int, seed: int) -> npt.NDArray[np.int64]:
    """Which of `n_rows` rows the bank keeps: all, or a seeded subset of MAX_BANK_VALUES // n_features."""
    limit = max(1, MAX_BANK_VALUES // n_features)
    if n_rows <= limit:
        return np.arange(n_rows, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=limit, replace=False)).astype(np.int64)


class MemoryBank(nn.Module):
    """Mean distance of each normalised row to its `k` nearest bank rows: (batch, d) -> (batch,)."""

    def __init__(self, bank: Array, k: int) -> None:
        super().__init__()
        self.k = min(k, len(bank))
        # float64: in float32 the expansion below loses ~1e-3 of distance near a bank row (duplicate rows
        # are common in tables), enough for ONNX Runtime and torch to disagree.
        rows = torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float64)).flatten(1)  # (m, d)
        self.register_buffer("bank", rows)
        self.register_buffer("bank_sq", (rows**2).sum(dim=1))  # (m,)
        self.bank: Tensor
        self.bank_sq: Tensor

    @torch.no_grad()
    def held_out(self, x: Array, in_bank: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """The score of each of the rows `x` (normalised) as if it were not in the bank: rows `x[in_bank]`
        are bank rows 0, 1, ... in order, scored against the other bank rows (leave one out); the rest are
        scored against the whole bank. These are the out-of-sample scores of the bank's own rows, with the
        bank the final graph holds (fold models' smaller banks would put new rows' scores lower)."""
        rows = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).flatten(1)  # (n, d)
        position = np.full(len(x), -1, dtype=np.int64)
        position[in_bank] = np.arange(len(in_bank))
        k = min(self.k, len(self.bank) - 1) if len(in_bank) else self.k
        scores = np.empty(len(x))
        for start in range(0, len(x), 512):  # (512, m) distances at a time
            chunk = rows[start : start + 512]
            squared = (chunk**2).sum(dim=1, keepdim=True) - 2.0 * chunk @ self.bank.T + self.bank_sq
            own = torch.from_numpy(position[start : start + 512])
            mine = torch.nonzero(own >= 0).ravel()
            squared[mine, own[mine]] = torch.inf  # a bank row is not its own neighbour
            nearest = torch.topk(squared.clamp(min=0.0), k, dim=1, largest=False).values
            scores[start : start + 512] = nearest.sqrt().mean(dim=1).numpy()
        return scores

    def forward(self, x: Tensor) -> Tensor:
        # |x - b|^2 = |x|^2 - 2 x.b + |b|^2: one matmul instead of a (batch, m, d) difference tensor.
        x64 = x.flatten(1).double()  # (batch, d): a sample of any shape is its d values
        squared = (x64**2).sum(dim=1, keepdim=True) - 2.0 * x64 @ self.bank.T + self.bank_sq  # (batch, m)
        nearest = torch.topk(squared.clamp(min=0.0), self.k, dim=1, largest=False).values  # (batch, k)
        return nearest.sqrt().mean(dim=1).float()  # (batch,)


class ScoreCombination(nn.Module):
    """mean_i (log(s_i + eps_i) - centre_i) / spread_i over scores s_i, each (batch,) -> (batch,)."""

    def __init__(self, eps: Sequence[float], centre: Sequence[float], spread: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("eps", torch.tensor(eps, dtype=torch.float32))  # (n_scores,)
        self.register_buffer("centre", torch.tensor(centre, dtype=torch.float32))
        self.register_buffer("spread", torch.tensor(spread, dtype=torch.float32))
        self.eps: Tensor
        self.centre: Tensor
        self.spread: Tensor

    @classmethod
    def fit(cls, held_out: Sequence[npt.NDArray[np.floating]]) -> ScoreCombination:
        """Centres and spreads from each score's held-out normal values (median and IQR/1.349 of logs)."""
        eps, centre, spread = [], [], []
        for values in held_out:
            v = np.asarray(values, np.float64)
            # A floor for the log: a fraction of the typical score, so a zero score (a duplicate of a bank
            # row) stays finite without mattering otherwise.
            e = 1e-3 * max(float(np.median(v)), 1e-12) + 1e-12
            logs = np.log(v + e)
            q25, q50, q75 = np.percentile(logs, [25, 50, 75])
            # IQR / 1.349 is the std for normal logs; the std itself where the IQR collapses (ties).
            s = (q75 - q25) / 1.349 if q75 > q25 else float(logs.std())
            eps.append(e)
            centre.append(float(q50))
            spread.append(s if s > 1e-12 else 1.0)
        return cls(eps, centre, spread)

    def forward(self, scores: Sequence[Tensor]) -> Tensor:
        stacked = torch.stack(list(scores), dim=1)  # (batch, n_scores)
        return ((torch.log(stacked + self.eps) - self.centre) / self.spread).mean(dim=1)  # (batch,)


class ScoredModel(nn.Module):
    """A trained model with a memory-bank score (when given a bank) and, once fitted on held-out scores, the
    combination of all its scores, added after the model's own."""

    def __init__(
        self, model: Autoencoder, bank: MemoryBank | None, combination: ScoreCombination | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.memory = bank
        self.combination = combination

    @property
    def scores(self) -> tuple[ScoreName, ...]:
        base = (*self.model.scores, *((KNN_SCORE,) if self.memory is not None else ()))
        return (*base, COMBINED_SCORE) if self.combination is not None else base

    @property
    def encoder_outputs(self) -> tuple[str, ...]:
        return self.model.encoder_outputs

    @property
    def latent_dim(self) -> int:
        return self.model.latent_dim

    def encode(self, x: Tensor) -> Tensor:
        return self.model.encode(x)

    def encode_outputs(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.model.encode_outputs(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.model.decode(z)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)  # type: ignore[no-any-return]

    def base_scores(self, x: Tensor, codes: tuple[Tensor, ...], reconstruction: Tensor) -> list[Tensor]:
        """The model's own scores (mse first) and the bank's, each (batch,), in `scores` order."""
        mse = ((reconstruction - x) ** 2).flatten(1).mean(dim=1)  # (batch,), as the fused graph's `error`
        bank = [self.memory(x)] if self.memory is not None else []
        return [mse, *self.model.extra_scores(x, codes, reconstruction), *bank]

    def extra_scores(
        self, x: Tensor, codes: tuple[Tensor, ...], reconstruction: Tensor
    ) -> tuple[Tensor, ...]:
        """Per-sample scores besides mse, in the order of `scores[1:]`, each (batch,)."""
        parts = self.base_scores(x, codes, reconstruction)
        if self.combination is None:
            return tuple(parts[1:])
        return (*parts[1:], self.combination(parts))

    @torch.no_grad()
    def score(self, normalised: Array) -> dict[ScoreName, npt.NDArray[np.float64]]:
        """Every score of normalised samples (n, *input_shape), computed in torch as the fused graph does."""
        self.eval()
        x = torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32))
        codes = self.model.encode_outputs(x)
        reconstruction = self.model.decode(codes[0])
        parts = self.base_scores(x, codes, reconstruction)
        if self.combination is not None:
            parts.append(self.combination(parts))
        return {s: p.double().numpy() for s, p in zip(self.scores, parts, strict=True)}

    @torch.no_grad()
    def combine(self, scores: dict[ScoreName, npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        """The combined score of given scores (e.g. out-of-fold ones), as the graph combines them."""
        if self.combination is None:
            raise ValueError("no combination fitted")
        parts = [torch.from_numpy(np.asarray(scores[s], np.float32)) for s in self.scores[:-1]]
        return self.combination(parts).double().numpy()  # type: ignore[no-any-return]
