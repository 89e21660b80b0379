"""Command line: `python -m training train ...` trains one model version; `defaults` rebuilds the shipped set.

`--variant` names the objective, `--architecture` the network body (chosen from the data when not given).
Their names and each objective's own options (--l1, --rho, --beta, ...) come from `training.catalogue`,
which declares what `training.objectives` and `training.bodies` hold without importing torch: help and every
argument or data error answer at once, and torch and ONNX are imported only once there is something to
train, export or score. Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from service.contract import is_valid_name
from training.arguments import OneLineParser, number
from training.catalogue import BODY_DEFAULTS, BODY_HIDDEN, VARIANT_OPTIONS, HyperParameter
from training.config import TrainConfig
from training.data import BUILTIN_DATASETS, DataError, Dataset, load_data, read_mnist

if TYPE_CHECKING:
    from training.artifact import TrainedVersion

__all__ = ["digits_config", "main", "mnist_config"]

# The body of the shipped digits-<variant> models: an MLP over the 64 pixels, the no-data default.
SHIPPED_ARCHITECTURE = "mlp"
# The body of the mnist-<variant> models `defaults --mnist DIR` adds: the convolutional image body, with its
# defaults (`training.defaults.BODY_TUNED["conv2d"]`).
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
    for declared in VARIANT_OPTIONS.values():
        for p in declared:
            options.setdefault(p.name, p)
    return options


def _names(text: str) -> tuple[str, ...]:
    """Comma-separated feature names, e.g. "age,height"."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated non-empty names, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m training", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    defaults = TrainConfig()

    train = commands.add_parser("train", help="train one variant and write DIR/NAME/<next version>/")
    train.add_argument("--variant", required=True, choices=sorted(VARIANT_OPTIONS), help="the objective")
    train.add_argument(
        "--data",
        required=True,
        help=f"{', '.join(BUILTIN_DATASETS)}, or a .npy/.csv file of rows (CSV: `,` `;` or tab separated; "
        "a header row names the features; a 3-D or 4-D .npy: images)",
    )
    chosen = ", ".join(f"{key} for {'/'.join(kinds)}" for key, kinds in BODY_DEFAULTS.items() if kinds)
    train.add_argument(
        "--architecture",
        choices=sorted(BODY_DEFAULTS),
        help=f"the network body (default from the data: {chosen})",
    )
    train.add_argument(
        "--feature-names", type=_names, help="comma-separated column names (default: the CSV header, if any)"
    )
    train.add_argument("--name", required=True, help="model name (letters, digits, _ . -)")
    train.add_argument("--out", required=True, type=Path, help="model repository directory")
    train.add_argument(
        "--test-every",
        type=int,
        default=0,
        help="hold out rows whose index %% K == 0 for the reported metrics, written beside the model as "
        "test.npy/test.csv (default 0: none, every row trains and calibrates)",
    )
    train.add_argument(
        "--quantize",
        action="store_true",
        help="try int8 dynamic quantisation after export; kept only if measured faster here and the "
        "reconstruction error drifts by at most 1%%",
    )
    _common_options(train, defaults)
    for p in _variant_options().values():
        owners = [k for k, declared in VARIANT_OPTIONS.items() if p in declared]
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
    rebuild.add_argument(
        "--variants", nargs="+", choices=sorted(VARIANT_OPTIONS), default=list(VARIANT_OPTIONS)
    )
    rebuild.add_argument(
        "--mnist",
        type=Path,
        metavar="DIR",
        help="also build mnist-<variant> conv2d models from the MNIST IDX files in DIR "
        "(t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)",
    )
    rebuild.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="build only these of the models the other options name, e.g. mnist-denoising mnist-vae",
    )
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    _evaluate_command(commands)
    return parser


def _evaluate_command(commands: argparse._SubParsersAction[OneLineParser]) -> None:
    parser = commands.add_parser(
        "evaluate", help="anomaly detection of a model version against PCA and IsolationForest"
    )
    data = f"{', '.join(BUILTIN_DATASETS)}, or a .npy/.csv file of rows"
    parser.add_argument(
        "--model", required=True, type=Path, help="a model version directory, models/NAME/VERSION"
    )
    parser.add_argument("--normal", required=True, help=f"normal rows: {data}")
    parser.add_argument("--anomalies", required=True, help=f"anomalous rows: {data}")
    parser.add_argument(
        "--train",
        help="the data the model was trained on, when neither its recorded path nor its source name can be "
        "reloaded",
    )
    parser.add_argument("--score", help="one of the model's scores (default: the model's default score)")
    parser.add_argument("--out", type=Path, default=Path("roc.png"), help="ROC plot PNG (default: roc.png)")


def _common_options(parser: argparse.ArgumentParser, d: TrainConfig) -> None:
    positive_int = number(int, 1)
    parser.add_argument(
        "--latent-dim",
        type=positive_int,
        help="code size (default: a quarter of a table's width; the variant's, mostly 16, for images)",
    )
    capacity = "; ".join(f"{key}: {what}" for key, what in BODY_HIDDEN.items())
    parser.add_argument(
        "--hidden",
        type=_hidden,
        help=f"the encoder's capacity, e.g. 256,128 ({capacity}; default: the variant's for the body)",
    )
    parser.add_argument("--epochs", type=positive_int, help="default: enough epochs for the step budget")
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="gradient-step budget when --epochs is unset (default: the variant's, 3000 at most for "
        "tables of under 1000 rows)",
    )
    parser.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    parser.add_argument("--lr", type=number(float, 1e-8, 10.0), default=d.lr)
    parser.add_argument("--weight-decay", type=number(float, 0.0), default=d.weight_decay)
    parser.add_argument("--patience", type=positive_int, default=d.patience, help="in gradient steps")
    parser.add_argument("--validation-fraction", type=number(float, 0.01, 0.9), default=d.validation_fraction)
    parser.add_argument(
        "--folds",
        type=number(int, 0),
        help="cross-fitting folds for calibration, >= 2, or 0 for a validation split (default: 5 below "
        "4000 rows, else 0)",
    )
    parser.add_argument(
        "--neighbours",
        type=number(int, 0),
        default=d.neighbours,
        help="k of the memory-bank score knn and of the combined score (0: neither)",
    )
    parser.add_argument(
        "--normalisation",
        choices=["standard", "robust", "minmax", "identity"],
        help="default: standard for tables, minmax for images",
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
    declared = {p.name for p in VARIANT_OPTIONS[args.variant]}
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
        folds=None if args.folds is None else int(args.folds),
        neighbours=int(args.neighbours),
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
    """How a shipped mnist-<variant> model is trained: the defaults on conv2d (seeded, one thread), without
    the memory bank: 1,337 rows of 784 pixels would add 8 MiB to every graph, for a score (`knn`) that is not
    the images' default."""
    return TrainConfig(variant=variant, architecture=MNIST_ARCHITECTURE, neighbours=0)


def _report(trained: TrainedVersion) -> None:
    m = trained.metadata
    held_out = "test" if m.data.n_test else "held-out"
    shown = "  ".join(f"{k}={m.metrics[k]:.6g}" for k in SHOWN_METRICS if k in m.metrics)
    print(f"wrote {trained.directory}")
    print(
        f"  {m.variant} on {m.architecture} {m.sample_shape}: {held_out} rows "
        f"{m.data.n_test or m.data.n_validation}  {shown}"
    )
    target = float(m.training.get("false_alarm_rate", 0.01))
    for score, cal in m.calibration.items():
        how = f"cross-fitted, {cal.folds} folds" if cal.method == "cross_fit" else "validation split"
        print(
            f"  threshold[{score}] = {cal.threshold:.6g} at false-alarm rate {cal.false_alarm_rate:.4g} "
            f"({cal.n} rows, {how})"
        )
    lowest = min((c.min_false_alarm_rate or 0.0) for c in m.calibration.values()) if m.calibration else 0.0
    if lowest > target:
        print(
            f"  note: {m.data.n_train + m.data.n_validation} rows support false-alarm rates down to "
            f"{lowest:.4g} only, not {target}: the default thresholds are set there"
        )


def _dataset(args: argparse.Namespace) -> Dataset:
    dataset = load_data(args.data)
    return dataset if args.feature_names is None else dataset.with_feature_names(args.feature_names)


def _rebuild(args: argparse.Namespace) -> None:
    """The shipped models: digits-<variant> for each of `args.variants`, and mnist-<variant> with --mnist."""
    # Prefix, data, recipe, and whether the held-out split stays beside the model: MNIST's images are not the
    # project's to commit (its models are rebuilt from the user's copy), scikit-learn's digits are.
    sets: list[tuple[str, Callable[[], Dataset], Callable[[str], TrainConfig], bool]] = [
        ("digits", lambda: load_data("digits"), digits_config, True)
    ]
    if args.mnist is not None:
        mnist = read_mnist(args.mnist)[0]  # read first, so that a wrong folder fails before anything trains
        sets.append(("mnist", lambda: mnist, mnist_config, False))
    planned = [
        (f"{prefix}-{v}", data, recipe, v, keep) for prefix, data, recipe, keep in sets for v in args.variants
    ]
    if args.only is not None:
        unknown = sorted(set(args.only) - {name for name, *_ in planned})
        if unknown:
            names = ", ".join(name for name, *_ in planned)
            raise CliError(f"--only {' '.join(unknown)}: not among the models these options build ({names})")
        planned = [plan for plan in planned if plan[0] in args.only]
    from training.artifact import train_version

    for name, data, recipe, variant, keep_held_out in planned:
        started = time.perf_counter()
        trained = train_version(
            recipe(variant),
            data(),
            args.out,
            name,
            test_every=SHIPPED_TEST_EVERY,
            progress=not args.quiet,
            version=1,
        )
        if not keep_held_out:
            (trained.directory / "test.npy").unlink(missing_ok=True)
        _report(trained)
        print(f"  built in {time.perf_counter() - started:.0f} s")


def run(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "evaluate":
        from training.evaluate import run_evaluate

        run_evaluate(args)
        return
    if args.command == "defaults":
        _rebuild(args)
        return
    if not is_valid_name(args.name):
        raise CliError(f"invalid --name {args.name!r}: expected letters, digits, '_', '.', '-' (max 128)")
    if args.test_every < 0:
        raise CliError(f"--test-every must be 0 or positive, got {args.test_every}")
    if args.folds == 1:
        raise CliError("--folds must be 0 (a validation split) or at least 2, got 1")
    config = _config(args)
    dataset = _dataset(args)
    # Data and arguments are checked: only now the heavy libraries.
    from training.artifact import train_version

    trained = train_version(config, dataset, args.out, args.name, args.test_every, not args.quiet)
    _report(trained)
    if args.quantize:
        from service.contract import ModelMetadata
        from training.quantize import quantise_version

        report = quantise_version(trained.directory, rows=dataset.x, apply=True)
        print(f"  int8: {'kept' if report.kept else 'not kept'}: {report.reason}")
        if report.kept:
            for score, cal in ModelMetadata.read(trained.directory).calibration.items():
                print(f"  threshold[{score}] = {cal.threshold:.6g} (int8 graphs)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Every failure is one line on stderr, never a traceback."""
    try:
        run(argv)
    except (CliError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failure in training or export (e.g. ExportError): still one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {first}".rstrip(": "), file=sys.stderr)
        return 1
    return 0
