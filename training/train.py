"""The training loop: Adam with a cosine learning-rate decay, early stopping on validation, seeds."""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from service.contract import InputKind
from training.bodies import body_for
from training.config import TrainConfig
from training.data import Array
from training.objectives import Autoencoder, build_model

__all__ = ["History", "TrainResult", "seed_everything", "train_model"]


@dataclass
class History:
    """Per-epoch curves."""

    train_loss: list[float] = field(default_factory=list)
    train_reconstruction: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    validation_reconstruction: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


@dataclass
class TrainResult:
    model: Autoencoder
    """The best model by validation loss, in eval mode."""
    history: History
    best_epoch: int
    epochs_run: int
    steps_run: int


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_starts(n_train: int, batch: int) -> list[int]:
    """Where each epoch's batches start: every `batch` rows, dropping a last batch smaller than half a batch
    (its noisy gradient is not worth a step)."""
    return [s for s in range(0, n_train, batch) if n_train - s >= batch // 2 or s == 0]


def epochs_for(config: TrainConfig, n_train: int, default_steps: int) -> tuple[int, int]:
    """(epochs, steps per epoch): a fixed step budget adapts the epoch count to the data size."""
    steps_per_epoch = len(batch_starts(n_train, min(config.batch_size, n_train)))
    if config.epochs is not None:
        return config.epochs, steps_per_epoch
    steps = default_steps if config.steps is None else config.steps
    return max(1, math.ceil(steps / steps_per_epoch)), steps_per_epoch


def train_model(
    config: TrainConfig,
    x_train: Array,
    x_validation: Array | None,
    progress: bool = True,
    kind: InputKind = "rows",
) -> TrainResult:
    """Train `config.variant` on normalised samples (n, *input_shape) of `kind`, on `config.architecture`
    (None: the body made for that kind); returns the model at its best validation loss, or, without
    validation samples (cross-fitting trains on every one), after the whole step budget."""
    torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    body = body_for(kind, config.architecture)
    model = build_model(
        config.variant,
        body,
        x_train.shape[1:],
        config.latent_dim,
        config.hidden,
        config.hparams,
        config.body_options(),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    epochs, steps_per_epoch = epochs_for(config, len(x_train), model.default_steps)
    total_steps = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: (
            config.lr_final_fraction
            + (1 - config.lr_final_fraction)
            * 0.5
            * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
        ),
    )
    train = torch.from_numpy(x_train)
    validation = None if x_validation is None else torch.from_numpy(x_validation)
    batch = min(config.batch_size, len(x_train))
    starts = batch_starts(len(train), batch)
    generator = torch.Generator().manual_seed(config.seed)
    history = History()
    best_loss, best_state, best_epoch, since_best, steps = (
        math.inf,
        copy.deepcopy(model.state_dict()),
        0,
        0,
        0,
    )
    bar = tqdm(range(epochs), desc=config.variant, disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(train), generator=generator)
        sums = [0.0, 0.0]
        for start in starts:
            loss = model.loss(train[order[start : start + batch]])
            optimiser.zero_grad(set_to_none=True)
            loss.total.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            sums[0] += float(loss.total.detach())
            sums[1] += float(loss.reconstruction.detach())
        steps += len(starts)
        history.train_loss.append(sums[0] / len(starts))
        history.train_reconstruction.append(sums[1] / len(starts))
        history.lr.append(optimiser.param_groups[0]["lr"])
        if validation is None:
            best_epoch = epoch
            bar.set_postfix(train=f"{history.train_loss[-1]:.4f}")
            continue
        val_loss, val_rec = evaluate_loss(model, validation)
        history.validation_loss.append(val_loss)
        history.validation_reconstruction.append(val_rec)
        if val_loss < best_loss and (math.isinf(best_loss) or best_loss - val_loss > 1e-7 * abs(best_loss)):
            best_loss, best_state, best_epoch, since_best = (
                val_loss,
                copy.deepcopy(model.state_dict()),
                epoch,
                0,
            )
        else:
            since_best += len(starts)
        bar.set_postfix(train=f"{history.train_loss[-1]:.4f}", val=f"{val_loss:.4f}")
        if since_best >= config.patience:
            break
    if validation is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, history, best_epoch, len(history.train_loss), steps)


def evaluate_loss(model: Autoencoder, x: torch.Tensor) -> tuple[float, float]:
    """(total loss, reconstruction mse) of the deterministic model on `x` (no corruption, no sampling)."""
    model.eval()
    with torch.enable_grad():
        loss = model.loss(x)
    return float(loss.total.detach()), float(loss.reconstruction.detach())
