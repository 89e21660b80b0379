from __future__ import annotations

import numpy as np
import torch

from training.memory import MemoryBank, ScoreCombination, bank_rows


def _brute_force(x: np.ndarray, bank: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    distances = np.sqrt(((x[:, None, :] - bank[None, :, :]) ** 2).sum(axis=2))  # (rows, bank rows)
    if exclude is not None:
        distances[np.arange(len(x)), exclude] = np.inf
    return np.sort(distances, axis=1)[:, :k].mean(axis=1)


def test_memory_bank_scores_the_mean_distance_to_the_k_nearest_rows() -> None:
    rng = np.random.default_rng(0)
    bank, x = rng.normal(size=(50, 4)), rng.normal(size=(7, 4))
    scores = MemoryBank(bank.astype(np.float32), 3)(torch.from_numpy(x.astype(np.float32)))
    np.testing.assert_allclose(scores.numpy(), _brute_force(x, bank, 3), rtol=1e-5)


def test_held_out_scores_leave_each_bank_row_out_of_its_own_neighbours() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 3))
    x[5] = x[6]  # a duplicate row: its neighbour at distance 0 is the other copy, not itself
    in_bank = np.arange(0, 40, 2)  # every second row is in the bank
    bank = MemoryBank(x[in_bank].astype(np.float32), 2)
    scores = bank.held_out(x, in_bank)
    position = np.full(40, -1)
    position[in_bank] = np.arange(len(in_bank))
    inside = _brute_force(x[in_bank], x[in_bank], 2, exclude=np.arange(len(in_bank)))
    outside = _brute_force(x[position < 0], x[in_bank], 2)
    np.testing.assert_allclose(scores[in_bank], inside, rtol=1e-5)
    np.testing.assert_allclose(scores[position < 0], outside, rtol=1e-5)


def test_bank_keeps_every_row_unless_there_are_too_many_values() -> None:
    assert np.array_equal(bank_rows(100, 8, seed=0), np.arange(100))
    kept = bank_rows(10_000, 1024, seed=0)
    assert len(kept) == 1024 and np.all(np.diff(kept) > 0)


def test_combination_puts_held_out_medians_at_zero() -> None:
    rng = np.random.default_rng(2)
    held_out = [rng.lognormal(0.0, 1.0, size=500), rng.lognormal(3.0, 0.2, size=500)]
    combination = ScoreCombination.fit(held_out)
    medians = [torch.tensor([float(np.median(s))]) for s in held_out]
    assert abs(float(combination(medians)[0])) < 1e-3
    # Monotone in each part.
    higher = [medians[0] * 2, medians[1]]
    assert float(combination(higher)[0]) > float(combination(medians)[0])
