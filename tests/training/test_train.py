from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import torch

from training.config import TrainConfig
from training.data import Normaliser
from training.train import batch_starts, epochs_for, train_model


@pytest.mark.parametrize(("n_train", "batch"), [(94, 64), (96, 64), (128, 64), (1150, 64), (20, 64)])
def test_epochs_for_counts_the_batches_the_loop_runs(n_train: int, batch: int) -> None:
    config = TrainConfig(batch_size=batch, steps=1000)
    _, steps_per_epoch = epochs_for(config, n_train, default_steps=6000)
    starts = batch_starts(n_train, min(batch, n_train))
    assert steps_per_epoch == len(starts)
    # Every batch but a dropped short tail is taken: at most half a batch of rows goes unused per epoch.
    assert n_train - starts[-1] >= min(batch, n_train) // 2


def test_train_model_runs_the_planned_steps_and_ends_at_the_lr_floor(
    digits: npt.NDArray[np.float32], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 94 rows at batch 64: the 30-row tail is dropped, so each epoch is one step, not two.
    x = Normaliser.fit(digits, "minmax", shared=True).transform(digits)
    config = TrainConfig(latent_dim=2, hidden=(8,), steps=40, patience=10_000, lr=1e-2)
    steps_taken = 0
    real_step = torch.optim.Adam.step

    def counting_step(self: torch.optim.Adam, *args: object, **kwargs: object) -> object:
        nonlocal steps_taken
        steps_taken += 1
        return real_step(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    result = train_model(config, x[:94], x[94:120], progress=False)
    assert steps_taken == result.steps_run == 40
    assert result.epochs_run == 40
    assert result.history.lr[-1] == pytest.approx(config.lr * config.lr_final_fraction, rel=1e-6)
    assert np.all(np.diff(result.history.lr) <= 0)
