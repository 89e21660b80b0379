"""The cost of one training step on 28x28 images, per objective and body: the measurement behind the conv2d
step budget and the contractive penalty's projections (`training/defaults.py`, `BODY_TUNED`).

Each configuration trains `--steps` steps on random 28x28 images at batch 64, one thread, after two warm-up
steps; the median step time is printed, and its ratio to the first configuration's (the plain conv2d model).

    .venv/bin/python bench/image_steps.py [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import torch

from training.config import TrainConfig
from training.defaults import resolve
from training.objectives import OBJECTIVES, build_model


@dataclass(frozen=True)
class Step:
    label: str
    objective: str
    body: str
    hparams: dict[str, float]


STEPS = (
    Step("plain, conv2d defaults", "plain", "conv2d", {}),
    Step("plain, MLP defaults", "plain", "mlp", {}),
    Step("denoising, conv2d defaults", "denoising", "conv2d", {}),
    Step("vae, conv2d defaults", "vae", "conv2d", {}),
    Step("contractive, conv2d defaults (one projection)", "contractive", "conv2d", {}),
    Step("contractive, conv2d, exact Jacobian", "contractive", "conv2d", {"jacobian_probes": 0}),
)


def step_seconds(step: Step, n_steps: int) -> float:
    """Median seconds of one gradient step of `step`'s model at batch 64 on 28x28 images."""
    torch.manual_seed(0)
    shape = (1, 28, 28) if step.body == "conv2d" else (784,)
    cls = OBJECTIVES[step.objective]
    given = TrainConfig(variant=step.objective, architecture=step.body, hparams=step.hparams)
    # The defaults `train` takes for MNIST's 6,400 training images on this body.
    config = resolve(given, 6400, shape, "image", cls.default_latent_dim, cls.default_steps, step.body)
    model = build_model(
        step.objective,
        step.body,
        shape,
        config.latent_dim,
        config.hidden,
        config.hparams,
        config.body_options(),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(64, *shape)  # (batch, *input_shape)
    times = []
    model.train()
    for i in range(n_steps + 2):
        started = time.perf_counter()
        loss = model.loss(x)
        optimiser.zero_grad()
        loss.total.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        if i >= 2:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    base = None
    print("| model | ms per step | x plain conv2d |\n|---|---|---|")
    for step in STEPS:
        seconds = step_seconds(step, args.steps)
        base = base or seconds
        print(f"| {step.label} | {seconds * 1000:.1f} | {seconds / base:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
