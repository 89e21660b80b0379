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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from service.contract import StepScore, is_valid_name
from training.arguments import OneLineParser, number
from training.catalogue import BODY_DEFAULTS, BODY_HIDDEN, VARIANT_OPTIONS, HyperParameter
from training.config import TrainConfig
from training.data import (
    BUILTIN_DATASETS,
    BUILTIN_SERIES,
    DataError,
    DataOptions,
    Dataset,
    load_data,
    read_mnist,
)
from training.series import Gaps

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
# The shipped series model: (name, objective, data) trained with the CLI's defaults for a series but for the
# memory bank (its default score is the reconstruction error, and a bank of every training window would make
# the graph a hundred times larger) and the step rule: its example's faults are short and close together,
# where covering_mean ranks them best (docs/time-series.md).
SHIPPED_SERIES = ("sensors-plain", "plain", "sensors")
SHIPPED_SERIES_STEP_SCORE: StepScore = "covering_mean"
# Written beside the shipped series model: two days after its training data, with faults (`training.sensors`).
EXAMPLE_FILE = "example.csv"
SHIPPED_NAMES = [
    *(f"digits-{v}" for v in VARIANT_OPTIONS),
    SHIPPED_SERIES[0],
    *(f"mnist-{v}" for v in VARIANT_OPTIONS),
]
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


def _centred(text: str) -> tuple[str, ...] | None:
    """--centred-channels: auto (None: chosen from the data), none (no channel), or channel names."""
    word = text.strip().lower()
    return None if word == "auto" else () if word == "none" else _names(text)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m training", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    defaults = TrainConfig()

    train = commands.add_parser("train", help="train one variant and write DIR/NAME/<next version>/")
    train.add_argument("--variant", required=True, choices=sorted(VARIANT_OPTIONS), help="the objective")
    train.add_argument(
        "--data",
        required=True,
        help=f"{', '.join(BUILTIN_DATASETS)}, {', '.join(BUILTIN_SERIES)} (a generated series), or a "
        ".npy/.csv file of rows (CSV: `,` `;` or tab separated; a header row names the features; a 3-D or "
        "4-D .npy: images) or of time steps (a series: see --kind, --time-column, --window)",
    )
    _data_options(train)
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
        help="hold out rows whose index %% K == 0 (a series: its last 1/K of the steps) for the reported "
        "metrics, written beside the model as test.npy/test.csv (default 0: none, every row trains and "
        "calibrates)",
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
        "defaults",
        help=f"rebuild the shipped digits-<variant> models and {SHIPPED_SERIES[0]} (a series), and with "
        "--mnist the mnist-<variant> ones, version 1",
    )
    rebuild.add_argument("--out", type=Path, default=Path("models"))
    rebuild.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANT_OPTIONS),
        help="rebuild digits-<variant> (and mnist-<variant> with --mnist) for these objectives only "
        f"(default: every one, and {SHIPPED_SERIES[0]})",
    )
    rebuild.add_argument(
        "--only",
        nargs="+",
        choices=SHIPPED_NAMES,
        metavar="NAME",
        help=f"rebuild only these shipped models, e.g. --only {SHIPPED_SERIES[0]} mnist-denoising (the mnist "
        "ones need --mnist)",
    )
    rebuild.add_argument(
        "--mnist",
        type=Path,
        metavar="DIR",
        help="also build mnist-<variant> conv2d models from the MNIST IDX files in DIR "
        "(t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)",
    )
    rebuild.add_argument("--quiet", action="store_true", help="no progress bar")
    _evaluate_command(commands)
    return parser


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kind",
        choices=["rows", "series"],
        help="series: rows are time steps of one series, cut into windows; rows: independent rows "
        "(default: series when --time-column or --window is given, else from the data's shape)",
    )
    parser.add_argument(
        "--time-column",
        help="a series' time column (numbers or ISO 8601 times, checked increasing and unique; gaps are "
        "reported), dropped from the channels; makes the data a series",
    )
    parser.add_argument("--columns", type=_names, help="CSV columns to keep, comma-separated, in order")
    parser.add_argument(
        "--drop-columns", type=_names, default=(), help="CSV columns to leave out, comma-separated"
    )
    parser.add_argument(
        "--window",
        type=number(int, 2),
        help="time steps per window of a series (default: the first zero of the data's autocorrelation, "
        "within bounds); makes the data a series",
    )
    parser.add_argument(
        "--stride", type=number(int, 1), default=1, help="steps between training windows (default 1)"
    )
    parser.add_argument(
        "--centred-channels",
        type=_centred,
        help="channels of a series read level-free (each window's mean on them set aside, so a slow drift "
        "raises no error): auto (those that drift: their level moves between windows, one way), none, or "
        "names (indices for unnamed channels), comma-separated (default auto)",
    )
    parser.add_argument(
        "--step-score",
        choices=list(get_args(StepScore)),
        default=TrainConfig().step_score,
        help="how a time step's score is made from the windows covering it: last (its error in the window "
        "ending at it), window_mean (that window's mean error), covering_mean (the mean over every window "
        "covering it; not causal), covering_max (the largest mean error of the windows covering it; not "
        f"causal) (default {TrainConfig().step_score})",
    )


def _data(args: argparse.Namespace) -> DataOptions:
    if args.columns is not None and args.drop_columns:
        raise CliError("give --columns or --drop-columns, not both")
    return DataOptions(
        kind=args.kind,
        time_column=args.time_column,
        columns=args.columns,
        drop_columns=args.drop_columns,
        window=None if args.window is None else int(args.window),
        stride=int(args.stride),
    )


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
    parser.add_argument(
        "--code",
        choices=["dense", "grid"],
        help="a convolutional body's code: a dense layer over the last stage, or channels at every cell of "
        "its grid (default: grid for denoising images, dense otherwise)",
    )
    parser.add_argument(
        "--stage-convs",
        type=positive_int,
        help="convolutions per stage of a convolutional body, the strided one last (default: 2 for "
        "denoising images, 1 otherwise)",
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
        code=args.code,
        stage_convs=None if args.stage_convs is None else int(args.stage_convs),
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
        step_score=args.step_score,
        centred_channels=args.centred_channels,
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


def _describe_series(dataset: Dataset) -> None:
    """What reading a series found: the time column's gaps, the window and how it was chosen."""
    spec, notes = dataset.series, dataset.notes or {}
    if spec is None or dataset.steps is None:
        return
    if spec.time_column is not None and "gaps" in notes:
        print(f"  {Gaps(**notes['gaps']).describe(spec.time_column)}")
    how = notes.get("window", {}).get("rule", "given")
    print(f"  series of {len(dataset.steps)} steps x {spec.channels} channels, window {spec.window} ({how})")


def _report(trained: TrainedVersion) -> None:
    m = trained.metadata
    held_out = "test" if m.data.n_test else "held-out"
    samples = "windows" if m.series else "rows"
    shown = "  ".join(f"{k}={m.metrics[k]:.6g}" for k in SHOWN_METRICS if k in m.metrics)
    print(f"wrote {trained.directory}")
    print(
        f"  {m.variant} on {m.architecture} {m.sample_shape}: {held_out} {samples} "
        f"{m.data.n_test or m.data.n_validation}  {shown}"
    )
    target = float(m.training.get("false_alarm_rate", 0.01))
    if m.series is not None:
        print(f"  thresholds per time step, step score {m.series.step_score}")
    for score, cal in m.calibration.items():
        how = f"cross-fitted, {cal.folds} folds" if cal.method == "cross_fit" else "validation split"
        print(
            f"  threshold[{score}] = {cal.threshold:.6g} at false-alarm rate {cal.false_alarm_rate:.4g} "
            f"({cal.n} {'steps' if m.series else 'rows'}, {how})"
        )
    lowest = min((c.min_false_alarm_rate or 0.0) for c in m.calibration.values()) if m.calibration else 0.0
    if lowest > target:
        n = max(c.n for c in m.calibration.values() if (c.min_false_alarm_rate or 0.0) == lowest)
        print(
            f"  note: {n} calibration {'steps' if m.series else 'rows'} support false-alarm rates down to "
            f"{lowest:.4g} only, not {target}: the default thresholds are set there"
        )


def _dataset(args: argparse.Namespace) -> Dataset:
    dataset = load_data(args.data, _data(args))
    return dataset if args.feature_names is None else dataset.with_feature_names(args.feature_names)


def _rebuild(args: argparse.Namespace) -> None:
    """The shipped models: digits-<variant> (for `args.variants`, default every objective), the series model
    (unless --variants or --only leave it out), mnist-<variant> with --mnist; only `args.only` when given."""
    variants = args.variants or list(VARIANT_OPTIONS)
    default = [f"digits-{v}" for v in variants]
    if args.variants is None:
        default.append(SHIPPED_SERIES[0])
    if args.mnist is not None:
        default += [f"mnist-{v}" for v in variants]
    chosen = args.only or default
    wants_mnist = [n for n in chosen if n.startswith("mnist-")]
    if wants_mnist and args.mnist is None:
        raise CliError(
            f"--only {' '.join(wants_mnist)}: the mnist models need --mnist DIR (the MNIST IDX files)"
        )
    # Read first, so that a wrong folder fails before anything trains.
    mnist = read_mnist(args.mnist)[0] if wants_mnist else None
    from training.artifact import train_version

    for variant in (v for v in VARIANT_OPTIONS if f"digits-{v}" in chosen):
        started = time.perf_counter()
        trained = train_version(
            digits_config(variant),
            load_data("digits"),
            args.out,
            f"digits-{variant}",
            test_every=SHIPPED_TEST_EVERY,
            progress=not args.quiet,
            version=1,
        )
        _report(trained)
        print(f"  built in {time.perf_counter() - started:.0f} s")
    if SHIPPED_SERIES[0] in chosen:
        _shipped_series(args.out, not args.quiet)
    for variant in (v for v in VARIANT_OPTIONS if f"mnist-{v}" in chosen):
        assert mnist is not None
        started = time.perf_counter()
        trained = train_version(
            mnist_config(variant),
            mnist,
            args.out,
            f"mnist-{variant}",
            test_every=SHIPPED_TEST_EVERY,
            progress=not args.quiet,
            version=1,
        )
        # MNIST's images are not the project's to commit: its models are rebuilt from the user's copy.
        (trained.directory / "test.npy").unlink(missing_ok=True)
        _report(trained)
        print(f"  built in {time.perf_counter() - started:.0f} s")


def _shipped_series(out: Path, progress: bool) -> None:
    """Train the shipped series model, and write beside it the two days that follow its training data with
    faults written in (`training.sensors.with_anomalies`), as a CSV a client can send as it is."""
    from training.artifact import train_version
    from training.sensors import sensor_series, with_anomalies

    name, variant, data = SHIPPED_SERIES
    dataset = load_data(data)
    _describe_series(dataset)
    trained = train_version(
        TrainConfig(variant=variant, neighbours=0, step_score=SHIPPED_SERIES_STEP_SCORE),
        dataset,
        out,
        name,
        test_every=0,
        progress=progress,
        version=1,
    )
    _report(trained)
    assert dataset.steps is not None
    days = with_anomalies(sensor_series(days=2.0, seed=1, start_step=len(dataset.steps)))
    (trained.directory / EXAMPLE_FILE).write_text(days.csv())
    print(
        f"  wrote {trained.directory / EXAMPLE_FILE}: two more days, faults at steps "
        f"{_spans(days.anomaly.tolist())}"
    )


def _spans(flags: Sequence[bool]) -> str:
    """[start, stop) of each run of True, e.g. "21-57, 50-53"."""
    spans, start = [], None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append(f"{start}-{i}")
            start = None
    return ", ".join(spans)


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
    _describe_series(dataset)
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
