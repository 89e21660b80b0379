"""Command line: `python -m training train ...` trains one model version; `defaults` rebuilds the shipped set.

`--variant` names the objective (`training.objectives.OBJECTIVES`), `--architecture` the network body
(`training.bodies.BODIES`, chosen from the data when not given). Each objective's own options (--l1, --rho,
--beta, ...) come from the `hyperparameters` its class declares.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from service.contract import ModelMetadata, is_valid_name
from training.arguments import OneLineParser, number
from training.artifact import TrainedVersion, train_version
from training.bodies import BODIES
from training.config import TrainConfig
from training.data import BUILTIN_DATASETS, DataError, Dataset, load_data, read_mnist
from training.evaluate import add_evaluate_command, run_evaluate
from training.objectives import OBJECTIVES, HyperParameter
from training.quantize import quantise_version

__all__ = ["digits_config", "main", "mnist_config"]

# The body of the shipped digits-<variant> models: an MLP over the 64 pixels, the no-data default.
SHIPPED_ARCHITECTURE = "mlp"
# The body of the mnist-<variant> models `defaults --mnist DIR` adds: the convolutional image body, with its
# defaults (each objective's `Tuned` entry for conv2d).
MNIST_ARCHITECTURE = "conv2d"
# Held out from the shipped models' training and reported on: every row whose index % 5 == 0.
SHIPPED_TEST_EVERY = 5
# Metrics printed after training (all are in the metadata).
SHOWN_METRICS = ("test_mse", "test_mse_raw", "pca_mse", "mse_to_pca_ratio")


class CliError(Exception):
    """Bad command-line input; printed as one line."""


def _hidden(text: str) -> tuple[int, ...]:
    """Comma-separated widths, e.g. "128,64"; empty for none."""
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"hidden widths must be positive, got {text!r}")
    return widths


def _variant_options() -> dict[str, HyperParameter]:
    options: dict[str, HyperParameter] = {}
    for cls in OBJECTIVES.values():
        for p in cls.hyperparameters:
            options.setdefault(p.name, p)
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m training", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    defaults = TrainConfig()

    train = commands.add_parser("train", help="train one variant and write DIR/NAME/<next version>/")
    train.add_argument("--variant", required=True, choices=sorted(OBJECTIVES), help="the objective")
    train.add_argument(
        "--data",
        required=True,
        help=f"{', '.join(BUILTIN_DATASETS)}, or a .npy/.csv file of rows (a 3-D or 4-D .npy: images)",
    )
    chosen = ", ".join(f"{key} for {'/'.join(b.default_for)}" for key, b in BODIES.items() if b.default_for)
    train.add_argument(
        "--architecture", choices=sorted(BODIES), help=f"the network body (default from the data: {chosen})"
    )
    train.add_argument("--name", required=True, help="model name (letters, digits, _ . -)")
    train.add_argument("--out", required=True, type=Path, help="model repository directory")
    train.add_argument(
        "--test-every", type=int, default=5, help="hold out rows whose index %% K == 0 (0: none)"
    )
    train.add_argument(
        "--quantize",
        action="store_true",
        help="try int8 dynamic quantisation after export; kept only if measured faster here and the "
        "reconstruction error drifts by at most 1%%",
    )
    _common_options(train, defaults)
    for p in _variant_options().values():
        owners = [k for k, cls in OBJECTIVES.items() if p in cls.hyperparameters]
        train.add_argument(
            f"--{p.name.replace('_', '-')}",
            dest=f"hp_{p.name}",
            type=number(float, p.minimum, p.maximum),
            help=f"{p.help} ({', '.join(owners)}; default {p.default})",
        )

    rebuild = commands.add_parser(
        "defaults", help="rebuild the shipped digits-<variant> models (and mnist-<variant> ones), version 1"
    )
    rebuild.add_argument("--out", type=Path, default=Path("models"))
    rebuild.add_argument("--variants", nargs="+", choices=sorted(OBJECTIVES), default=list(OBJECTIVES))
    rebuild.add_argument(
        "--mnist",
        type=Path,
        metavar="DIR",
        help="also build mnist-<variant> conv2d models from the MNIST IDX files in DIR "
        "(t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)",
    )
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    add_evaluate_command(commands)
    return parser


def _common_options(parser: argparse.ArgumentParser, d: TrainConfig) -> None:
    positive_int = number(int, 1)
    parser.add_argument(
        "--latent-dim", type=positive_int, help="code size (default: the variant's, mostly 16)"
    )
    capacity = "; ".join(f"{key}: {b.hidden_help}" for key, b in BODIES.items())
    parser.add_argument(
        "--hidden",
        type=_hidden,
        help=f"the encoder's capacity, e.g. 256,128 ({capacity}; default: the variant's for the body)",
    )
    parser.add_argument("--epochs", type=positive_int, help="default: enough epochs for the step budget")
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="gradient-step budget when --epochs is unset (default: the variant's)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    parser.add_argument("--lr", type=number(float, 1e-8, 10.0), default=d.lr)
    parser.add_argument("--weight-decay", type=number(float, 0.0), default=d.weight_decay)
    parser.add_argument("--patience", type=positive_int, default=d.patience, help="in gradient steps")
    parser.add_argument("--validation-fraction", type=number(float, 0.01, 0.9), default=d.validation_fraction)
    parser.add_argument(
        "--normalisation", choices=["standard", "minmax", "identity"], default=d.normalisation
    )
    parser.add_argument(
        "--shared-scale",
        action=argparse.BooleanOptionalAction,
        help="one normalisation scale for all features, for features in the same units such as pixels "
        "(default: on for images, i.e. digits or a 3-D/4-D .npy, off otherwise)",
    )
    parser.add_argument("--false-alarm-rate", type=number(float, 1e-6, 0.5), default=d.false_alarm_rate)
    parser.add_argument("--seed", type=number(int, 0), default=d.seed)
    parser.add_argument("--threads", type=positive_int, default=d.threads)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace) -> TrainConfig:
    declared = {p.name for p in OBJECTIVES[args.variant].hyperparameters}
    given = {n: getattr(args, f"hp_{n}") for n in _variant_options() if getattr(args, f"hp_{n}") is not None}
    foreign = sorted(set(given) - declared)
    if foreign:
        flags = ", ".join(f"--{n.replace('_', '-')}" for n in foreign)
        own = ", ".join(f"--{n.replace('_', '-')}" for n in sorted(declared)) or "none"
        raise CliError(f"{flags} does not apply to variant {args.variant!r} (its own options: {own})")
    return TrainConfig(
        variant=args.variant,
        architecture=args.architecture,
        latent_dim=None if args.latent_dim is None else int(args.latent_dim),
        hidden=args.hidden,
        epochs=None if args.epochs is None else int(args.epochs),
        steps=None if args.steps is None else int(args.steps),
        batch_size=int(args.batch_size),
        lr=args.lr,
        weight_decay=args.weight_decay,
        patience=int(args.patience),
        validation_fraction=args.validation_fraction,
        normalisation=args.normalisation,
        shared_scale=args.shared_scale,
        false_alarm_rate=args.false_alarm_rate,
        seed=int(args.seed),
        threads=int(args.threads),
        hparams=given,
    )


def digits_config(variant: str) -> TrainConfig:
    """How a shipped digits-<variant> model is trained: the defaults, on an MLP."""
    return TrainConfig(variant=variant, architecture=SHIPPED_ARCHITECTURE)


def mnist_config(variant: str) -> TrainConfig:
    """How a shipped mnist-<variant> model is trained: the defaults on conv2d (seeded, one thread)."""
    return TrainConfig(variant=variant, architecture=MNIST_ARCHITECTURE)


def _report(trained: TrainedVersion) -> None:
    m = trained.metadata
    held_out = "test" if m.data.n_test else "validation"
    shown = "  ".join(f"{k}={m.metrics[k]:.6g}" for k in SHOWN_METRICS)
    print(f"wrote {trained.directory}")
    print(
        f"  {m.variant} on {m.architecture} {m.sample_shape}: {held_out} rows "
        f"{m.data.n_test or m.data.n_validation}  {shown}"
    )
    for score, cal in m.calibration.items():
        print(f"  threshold[{score}] = {cal.threshold:.6g} at false-alarm rate {cal.false_alarm_rate}")


def run(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "evaluate":
        run_evaluate(args)
        return
    if args.command == "defaults":
        sets: list[tuple[str, Dataset, Callable[[str], TrainConfig]]] = [
            ("digits", load_data("digits"), digits_config)
        ]
        if args.mnist is not None:  # read first, so that a wrong folder fails before anything is trained
            sets.append(("mnist", read_mnist(args.mnist)[0], mnist_config))
        for prefix, dataset, recipe in sets:
            for variant in args.variants:
                started = time.perf_counter()
                trained = train_version(
                    recipe(variant),
                    dataset,
                    args.out,
                    f"{prefix}-{variant}",
                    test_every=SHIPPED_TEST_EVERY,
                    progress=not args.quiet,
                    version=1,
                )
                _report(trained)
                print(f"  built in {time.perf_counter() - started:.0f} s")
        return
    if not is_valid_name(args.name):
        raise CliError(f"invalid --name {args.name!r}: expected letters, digits, '_', '.', '-' (max 128)")
    if args.test_every < 0:
        raise CliError(f"--test-every must be 0 or positive, got {args.test_every}")
    config = _config(args)
    dataset = load_data(args.data)
    trained = train_version(config, dataset, args.out, args.name, args.test_every, not args.quiet)
    _report(trained)
    if args.quantize:
        report = quantise_version(trained.directory, rows=dataset.x, apply=True)
        print(f"  int8: {'kept' if report.kept else 'not kept'}: {report.reason}")
        if report.kept:
            for score, cal in ModelMetadata.read(trained.directory).calibration.items():
                print(f"  threshold[{score}] = {cal.threshold:.6g} (int8 graphs)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors in the input are one line on stderr, never a traceback."""
    try:
        run(argv)
    except (CliError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    return 0
