"""`python -m service.bulk score`: score a table of rows (Parquet or CSV) into Parquet, on a Ray cluster.

    python -m service.bulk score --model NAME[:VERSION] --models DIR --input PATH --output PATH
        [--task reconstruction-error|encode|denoise] [--keep-columns id,...] [--per-feature]
        [--series-key COL] [--time-column COL] [--threshold T | --false-alarm-rate R] [--score NAME]
        [--input-format auto|parquet|csv] [--batch-size N] [--concurrency N] [--address auto|ray://...|HOST:PORT]

Without --address it starts Ray on this machine. Every failure is one line on stderr (exit status 2 for bad
options or input, 1 for a failed job), never a traceback; Ray's own progress bar shows how the job goes.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlparse

from pydantic import ValidationError

from service.bulk.columns import BULK_TASKS, BulkInputError
from service.bulk.scoring import DEFAULT_BATCH_ROWS, ModelFiles, load_model, score_dataset
from service.core.runtime import OnnxModel
from service.core.tasks import ScoreOptions, TaskOptions
from service.errors import ServiceError

if TYPE_CHECKING:
    import ray.data

__all__ = ["main", "run"]

_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
CLIENT_CONNECTS = 3
"""Attempts at a `ray://` connection whose server fails to start."""


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr (exit status 2), without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m service.bulk", description="Score tables of rows on Ray Data.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    score = commands.add_parser("score", help="score a table into Parquet", description=__doc__)
    score.add_argument("--model", required=True, metavar="NAME[:VERSION]", help="default: the latest version")
    score.add_argument("--models", required=True, type=Path, metavar="DIR", help="the model repository")
    score.add_argument(
        "--input", required=True, metavar="PATH", help="a file, a folder, or any path Ray reads"
    )
    score.add_argument("--output", required=True, metavar="PATH", help="a new folder of Parquet files")
    score.add_argument("--task", choices=list(BULK_TASKS), default="reconstruction-error")
    score.add_argument(
        "--keep-columns",
        default="",
        metavar="COL,...",
        help="columns to carry through (the rest are features)",
    )
    score.add_argument("--per-feature", action="store_true", help="also each feature's error, by name")
    score.add_argument("--series-key", metavar="COL", help="series models: the column naming each series")
    score.add_argument("--time-column", metavar="COL", help="series models: default the model's time column")
    thresholds = score.add_mutually_exclusive_group()
    thresholds.add_argument("--threshold", type=_finite, help="anomaly threshold on the score")
    thresholds.add_argument(
        "--false-alarm-rate", type=_finite, metavar="RATE", help="the calibrated threshold for this rate"
    )
    score.add_argument("--score", help="one of the model's scores (default the model's)")
    score.add_argument("--input-format", choices=["auto", "parquet", "csv"], default="auto")
    score.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_ROWS, metavar="ROWS")
    score.add_argument("--concurrency", type=_positive, metavar="ACTORS", help="default: one per CPU")
    score.add_argument(
        "--address",
        help="a running Ray cluster: auto, ray://HOST:PORT or HOST:PORT (default: start one here)",
    )
    return parser


def _options(args: argparse.Namespace) -> TaskOptions | None:
    score_flags = {
        "--per-feature": args.per_feature,
        "--threshold": args.threshold is not None,
        "--false-alarm-rate": args.false_alarm_rate is not None,
        "--score": args.score is not None,
    }
    if args.task != "reconstruction-error":
        given = [flag for flag, on in score_flags.items() if on]
        if given:
            raise BulkInputError(f"{', '.join(given)} only apply to --task reconstruction-error")
        return None
    try:
        return ScoreOptions(
            per_feature=args.per_feature,
            threshold=args.threshold,
            false_alarm_rate=args.false_alarm_rate,
            score=args.score,
        )
    except ValidationError as exc:
        raise BulkInputError("; ".join(str(e["msg"]) for e in exc.errors())) from None


def _local(path: str) -> Path | None:
    """The local path `path` names, or None for a URI Ray reads itself (s3://, gs://, ...)."""
    scheme = urlparse(path).scheme
    return Path(path.removeprefix("file://")) if scheme in ("", "file") else None


def _input_format(path: str, given: str) -> str:
    if given != "auto":
        return given
    local = _local(path)
    if local is not None and local.is_dir():
        found = {_FORMATS.get(p.suffix.lower()) for p in local.rglob("*") if p.is_file()} - {None}
        if len(found) == 1:
            return str(found.pop())
        what = "no Parquet or CSV files" if not found else "both Parquet and CSV files"
        raise BulkInputError(f"the input folder {path} holds {what}; give --input-format")
    suffix = Path(urlparse(path).path).suffix.lower()
    if suffix not in _FORMATS:
        raise BulkInputError(
            f"cannot tell the format of {path} from its name; give --input-format parquet or csv"
        )
    return _FORMATS[suffix]


def _check_paths(args: argparse.Namespace) -> None:
    source = _local(args.input)
    if source is not None and not source.exists():
        raise BulkInputError(f"the input {args.input} does not exist")
    target = _local(args.output)
    if target is not None and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BulkInputError(f"the output {args.output} already exists; give a new folder")


class _CoreLogFilter:
    """Drops the log lines Ray's C++ core writes straight to file descriptor 2 (Python's logging settings do
    not reach them), and passes everything else, the progress bar included, through to stderr."""

    LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [DIWEF] \d+ \d+\] ")

    def __enter__(self) -> _CoreLogFilter:
        sys.stderr.flush()
        self._stderr = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._read = read
        self._thread = threading.Thread(target=self._pump, daemon=True, name="ray-core-log-filter")
        self._thread.start()
        return self

    def _pump(self) -> None:
        pending = b""
        while chunk := os.read(self._read, 65536):
            pending += chunk
            # A segment ends at a newline or a carriage return (a progress bar redraws with the latter).
            *segments, pending = re.split(rb"(?<=[\r\n])", pending)
            kept = b"".join(s for s in segments if not self.LINE.match(s))
            if kept:
                os.write(self._stderr, kept)
        if pending and not self.LINE.match(pending):
            os.write(self._stderr, pending)

    def __exit__(self, *exc: object) -> None:
        sys.stderr.flush()
        os.dup2(self._stderr, 2)  # closes the pipe's last writer: the pump reads to its end and stops
        self._thread.join(timeout=2)
        os.close(self._read)
        os.close(self._stderr)


def _client(address: str | None) -> bool:
    """Whether `address` is a Ray Client one (`ray://HOST:PORT`): this process is then not in the cluster."""
    return address is not None and address.startswith("ray://")


def _configure_data() -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = True
    context.print_on_execution_start = False
    context.raise_original_map_exception = True
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def _start_ray(address: str | None) -> None:
    import ray

    # Ray's logs (its workers', its executor's) would bury the one line a failure prints: the progress bar
    # stays, and the failure is ours to print, from the original exception rather than Ray's wrapper.
    warnings.filterwarnings("ignore", module=r"ray(\..*)?$")
    # Ray collects usage statistics and sends them to its makers unless told not to; a scoring job keeps to
    # its cluster (set RAY_USAGE_STATS_ENABLED=1 to share them).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        ray.init(log_to_driver=False, logging_level=logging.CRITICAL, include_dashboard=False)
    elif not _client(address):
        ray.init(address=address, log_to_driver=False, logging_level=logging.CRITICAL)
    else:
        # Not `include_dashboard` (the client's server then fails to start: the dashboard is the cluster's).
        # The head starts a server process per client, and that start can fail on a busy head: Ray answers
        # ConnectionAbortedError, and a new connection gets a new server.
        for attempt in range(1, CLIENT_CONNECTS + 1):
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.CRITICAL)
                break
            except ConnectionAbortedError:
                ray.shutdown()
                if attempt == CLIENT_CONNECTS:
                    raise
            except ConnectionError as exc:  # nothing answers there (Ray has retried)
                raise ConnectionError(
                    f"no Ray Client server answers at {address} ({exc}); expected the head node's client "
                    "port, which `ray start --head` opens on 10001 (--ray-client-server-port)"
                ) from None
    _configure_data()


def _read(path: str, fmt: str) -> ray.data.Dataset:
    import ray.data

    return ray.data.read_csv(path) if fmt == "csv" else ray.data.read_parquet(path)


def _score_and_write(source: str, fmt: str, output: str, model: OnnxModel, **score: Any) -> None:
    score_dataset(_read(source, fmt), model, **score).write_parquet(output)


def _remote_job(job: Callable[[OnnxModel], None], files: ModelFiles) -> None:
    """The job on a cluster node, for a Ray Client: the model from its files, Ray Data set as here."""
    _configure_data()
    with files.opened() as model:
        job(model)


def run(argv: Sequence[str] | None = None) -> str:
    """Run the command; the summary line to print. Raises BulkInputError, ServiceError or the job's error."""
    args = _parser().parse_args(argv)
    options = _options(args)
    keep = [c.strip() for c in args.keep_columns.split(",") if c.strip()]
    _check_paths(args)
    fmt = _input_format(args.input, args.input_format)
    model = load_model(args.models, args.model)
    import ray

    job = functools.partial(
        _score_and_write,
        args.input,
        fmt,
        args.output,
        task=args.task,
        options=options,
        keep_columns=keep,
        series_key=args.series_key,
        time_column=args.time_column,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
    )
    with _CoreLogFilter():
        _start_ray(args.address)
        try:
            if _client(args.address):
                # Ray Data's executor needs a process that is part of the cluster (a Ray Client has no core
                # worker), so the job's driver runs there, as a task that holds no CPU; the input and output
                # paths are read and written from the cluster, as they are by the job's own tasks anyway.
                remote = ray.remote(num_cpus=0, max_retries=0)(_remote_job)
                ray.get(remote.remote(job, ModelFiles.of(model)))
            else:
                job(model)
        finally:
            ray.shutdown()
    meta = model.metadata
    return f"scored {args.input} with {meta.name} version {meta.version} ({args.task}) into {args.output}"


def _cause(exc: BaseException) -> BaseException:
    """The error a failed job was raised for: Ray wraps it in its task error (`cause`), Python chains it."""
    seen = {id(exc)}
    while True:
        nested = getattr(exc, "cause", None) or exc.__cause__
        # Ray Data raises the original error `from` a marker (SystemException, UserCodeException) that says
        # only whose code failed: the error itself is the message.
        marker = type(nested).__module__ == "ray.data.exceptions"
        if not isinstance(nested, BaseException) or id(nested) in seen or marker:
            return exc
        seen.add(id(nested))
        exc = nested


def _one_line(exc: BaseException) -> str:
    """The error's message: its first line (Ray appends its retry advice on the next ones)."""
    if isinstance(exc, ServiceError):
        return exc.detail
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    if not isinstance(exc, BulkInputError | OSError):
        text = f"{type(exc).__name__}: {text}"
    return text[:1000]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit status. Every failure is one line on stderr, never a traceback."""
    try:
        print(run(argv))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed job: its cause, whatever it is, is what the user needs
        cause = _cause(exc)
        print(f"error: {_one_line(cause)}", file=sys.stderr)
        return 2 if isinstance(cause, BulkInputError | ServiceError) else 1
    return 0
