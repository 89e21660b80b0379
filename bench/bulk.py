"""Bulk scoring of a generated backlog: Ray Data against one process on the service core and against the HTTP
service, on the same cores, side by side.

    python -m bench.bulk [--rows 1000000] [--model digits-plain] [--cpus 2] [--batch-size 16384]
                         [--http-batch 1024] [--json-rows 100000] [--out FILE]

Rows of the model's features (float64, uniform in its training range, with an int64 `id`) are written as
Parquet files first (not timed). Then each path scores them (`/reconstruction-error`'s `error`):

- ONNX Runtime alone: one session, one thread, the fused graph on float32 batches of `--batch-size` already
  in memory: the model's own speed per core, with nothing around it.
- One process on the service core: the same Parquet files read with pyarrow batch by batch, each batch
  through the bulk scorer (`service.bulk.scoring.Scorer`: column checks, `Call.run_now`), written as
  Parquet: what a plain loop without Ray does, on one core.
- Ray Data: `score_dataset` on a local Ray (`num_cpus=--cpus`), Parquet in, Parquet out, timed from the read
  to the last file written (Ray's own start is not counted; its actors' start is). Run on `--rows` and on
  twice as many: the difference gives the steady rate, the job's fixed cost aside.
- The HTTP service: `python -m service` with one worker per core, `/reconstruction-error` in batches of
  `--http-batch` rows from twice as many client threads as cores, on the same cores, as raw float32 bodies
  (the service's fastest) and as JSON `inputs` (on `--json-rows` rows). Rows already in memory: no Parquet.

Every path's scores are checked against ONNX Runtime's (every row once, ids kept) before its rate counts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from bench.frameworks_report import markdown_table
from bench.inprocess import session
from bench.models import feature_range
from service.contract import ModelMetadata

ROOT = Path(__file__).resolve().parents[1]
FILES = 16
"""Parquet files the rows are written as (Ray reads them in parallel)."""
TASK = "reconstruction-error"


class WrongScoresError(AssertionError):
    """A path's answer is not ONNX Runtime's: a row missing, twice, or a score off."""


def _rows(directory: Path, n: int, seed: int) -> np.ndarray:
    low, high = feature_range(directory)
    rng = np.random.default_rng(seed)
    return low + (high - low) * rng.random((n, low.shape[0]))  # (n, input_dim) float64


def _write_parquet(x: np.ndarray, folder: Path) -> None:
    folder.mkdir(parents=True)
    step = -(-len(x) // FILES)
    for i, start in enumerate(range(0, len(x), step)):
        part = x[start : start + step]
        columns = {"id": np.arange(start, start + len(part))}
        columns |= {f"x{j}": part[:, j] for j in range(x.shape[1])}
        pq.write_table(pa.table(columns), folder / f"part-{i:03}.parquet")


def check_scores(ids: np.ndarray, got: np.ndarray, expected: np.ndarray) -> None:
    """`got[k]` is the score of row `ids[k]`; WrongScoresError unless every row is there once, as expected."""
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(ids[order], np.arange(len(expected))):
        raise WrongScoresError(
            f"{len(ids)} rows with {len(np.unique(ids))} ids; expected {len(expected)} once"
        )
    off = np.abs(got[order] - expected) > 1e-6 + 1e-5 * np.abs(expected)
    if off.any():
        i = int(np.flatnonzero(off)[0])
        raise WrongScoresError(f"row {i} scored {got[order][i]}, ONNX Runtime {expected[i]}")


def _check_table(target: Path, expected: np.ndarray) -> None:
    out = pq.read_table(target, columns=["id", "error"])
    check_scores(out.column("id").to_numpy(), out.column("error").to_numpy(), expected)


def _scoring_graph(directory: Path) -> str:
    """The file of the fused graph the service scores `error` with: `core` when the model has one."""
    graphs = ModelMetadata.read(directory).graphs
    return (graphs["core"] if "core" in graphs else graphs["model"]).path


def _ort_rows_per_s(model: Path, x: np.ndarray, batch: int) -> tuple[float, np.ndarray]:
    """One ONNX Runtime session on one thread over all of `x` (float32, in memory) in batches of `batch`."""
    s = session(model)
    s.run(["error"], {"x": x[:batch]})
    start = time.perf_counter()
    errors = [s.run(["error"], {"x": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return len(x) / (time.perf_counter() - start), np.concatenate(errors)


def _loop_seconds(models: Path, name: str, source: Path, target: Path, batch: int) -> float:
    """One process, no Ray: each Parquet file read batch by batch, scored by the bulk scorer, written."""
    from service.bulk import BULK_TASKS, load_model
    from service.bulk.columns import plan_columns
    from service.bulk.scoring import ModelFiles, Scorer

    model = load_model(models, name)
    files = sorted(source.glob("*.parquet"))
    schema = pq.read_schema(files[0])
    options = BULK_TASKS[TASK].options(None)
    plan = plan_columns(
        model, BULK_TASKS[TASK], options, dict(zip(schema.names, schema.types, strict=True)), ["id"]
    )
    target.mkdir(parents=True)
    start = time.perf_counter()
    scorer = Scorer(ModelFiles.of(model), TASK, options, plan)
    for path in files:
        with pq.ParquetWriter(target / path.name, plan.output_schema(schema)) as writer:
            for part in pq.ParquetFile(path).iter_batches(batch_size=batch):
                writer.write_table(scorer(pa.Table.from_batches([part])))
    return time.perf_counter() - start


def _bulk_seconds(models: Path, name: str, source: Path, target: Path, batch: int) -> float:
    """One bulk job, read to last write, on the Ray this process is connected to."""
    import ray.data

    from service.bulk import load_model, score_dataset

    model = load_model(models, name)
    start = time.perf_counter()
    scored = score_dataset(ray.data.read_parquet(str(source)), model, keep_columns=["id"], batch_size=batch)
    scored.write_parquet(str(target))
    return time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the service did not become ready (its log is in the benchmark's folder)")


@contextmanager
def _service(models: Path, workers: int, log: Path) -> Iterator[int]:
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "service",
        "--port",
        str(port),
        "--grpc-port",
        "0",
        "--models",
        str(models),
    ]
    env = os.environ | {"AE_WORKERS": str(workers), "AE_INTRA_OP_THREADS": "1", "AE_MAX_BATCH_ROWS": "65536"}
    with log.open("ab") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _ready(port, process)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def _http_rows_per_s(
    port: int, name: str, x: np.ndarray, batch: int, clients: int, as_json: bool
) -> tuple[float, np.ndarray]:
    """`/reconstruction-error` on all of `x` in batches of `batch`, from `clients` threads on keep-alive
    connections; the scores in row order."""
    starts = list(range(0, len(x), batch))
    errors: list[np.ndarray | None] = [None] * len(starts)
    failures: list[str] = []
    bodies = (
        [] if as_json else [np.ascontiguousarray(x[s : s + batch], dtype="<f4").tobytes() for s in starts]
    )
    cursor = iter(range(len(starts)))
    lock = threading.Lock()

    def work() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not failures:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            rows = x[starts[i] : starts[i] + batch]
            if as_json:
                body = orjson.dumps({"model": name, "inputs": rows.tolist()})
                headers = {"Content-Type": "application/json"}
                path = "/reconstruction-error"
            else:
                body = bodies[i]
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Accept": "application/octet-stream",
                    "X-Tensor-Shape": f"{len(rows)},{x.shape[1]}",
                }
                path = f"/reconstruction-error?model={name}"
            conn.request("POST", path, body, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                failures.append(f"{response.status} {data[:300]!r}")
                break
            errors[i] = np.asarray(orjson.loads(data)["errors"]) if as_json else np.frombuffer(data, "<f4")
        conn.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    if failures or any(e is None for e in errors):
        raise WrongScoresError(f"the service refused a batch: {failures[0] if failures else 'no answer'}")
    return len(x) / took, np.concatenate([e for e in errors if e is not None])


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return done.stdout.strip() + ("+changes" if dirty.strip() else "")


def _ray_paths(results: dict[str, Any], args: argparse.Namespace, tmp: Path, ort_errors: np.ndarray) -> None:
    import ray
    import ray.data

    models = ROOT / "models"
    # Ray would otherwise collect usage statistics and try to send them off this machine.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(
        num_cpus=args.cpus,
        object_store_memory=2 * 1024**3,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        # Untimed: Ray starts its worker processes on the first job; later jobs reuse them.
        _bulk_seconds(
            models, args.model, tmp / "rows" / "part-000.parquet", tmp / "scores-warm", args.batch_size
        )
        once = _bulk_seconds(models, args.model, tmp / "rows", tmp / "scores", args.batch_size)
        _check_table(tmp / "scores", ort_errors[: args.rows])
        twice = _bulk_seconds(models, args.model, tmp / "rows-twice", tmp / "scores-twice", args.batch_size)
        _check_table(tmp / "scores-twice", ort_errors)
    finally:
        ray.shutdown()
    results["bulk_seconds"], results["bulk_twice_seconds"] = once, twice
    results["bulk_rows_per_s"] = args.rows / once
    # Twice the rows should take longer; on a machine busy with other work it may not, and then there is no
    # steady rate to give.
    results["bulk_steady_rows_per_s"] = args.rows / (twice - once) if twice > once else None


def table(results: dict[str, Any]) -> str:
    """The results as a Markdown table: rows/s, per core, and per core against ONNX Runtime alone on one core
    at the same rows per model run."""
    cpus, batch, http_batch = results["cpus"], results["batch_size"], results["http_batch"]
    ort, http_ort = results["ort_rows_per_s_one_core"], results["ort_http_batch_rows_per_s_one_core"]
    paths = [
        ("ONNX Runtime alone, arrays in memory", batch, 1, ort, ort),
        ("ONNX Runtime alone, arrays in memory", http_batch, 1, http_ort, http_ort),
        ("one process on the service core, Parquet to Parquet", batch, 1, results["loop_rows_per_s"], ort),
        (
            "Ray Data `score_dataset`, Parquet to Parquet, whole job",
            batch,
            cpus,
            results["bulk_rows_per_s"],
            ort,
        ),
        (
            "Ray Data `score_dataset`, steady (job's fixed cost aside)",
            batch,
            cpus,
            results["bulk_steady_rows_per_s"],
            ort,
        ),
        ("HTTP service, raw float32 requests", http_batch, cpus, results["http_raw_rows_per_s"], http_ort),
        ("HTTP service, JSON requests", http_batch, cpus, results["http_json_rows_per_s"], http_ort),
    ]
    rows: list[tuple[object, ...]] = [
        (label, rows, n, rate, rate / n, rate / n / base)
        if rate is not None
        else (label, rows, n, "-", "-", "-")
        for label, rows, n, rate, base in paths
    ]
    header = ("path", "rows a run", "cores", "rows/s", "rows/s per core", "per core / ORT alone")
    return markdown_table(header, rows)


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    models = ROOT / "models"
    directory = models / args.model / "1"
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench.bulk", *argv]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "libraries": {n: package_version(n) for n in ["ray", "onnxruntime", "pyarrow", "numpy"]},
        "model": args.model,
        "rows": args.rows,
        "json_rows": min(args.json_rows, args.rows),
        "cpus": args.cpus,
        "batch_size": args.batch_size,
        "http_batch": args.http_batch,
    }
    x = _rows(directory, 2 * args.rows, seed=1)  # (2 * rows, input_dim) float64
    x32 = x.astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="ae-bench-bulk-") as tmp_name:
        tmp = Path(tmp_name)
        _write_parquet(x[: args.rows], tmp / "rows")
        _write_parquet(x, tmp / "rows-twice")
        del x

        # The graph the service runs for the default score: `core` (no memory bank) where the model has one,
        # since ONNX Runtime runs every node of a graph whatever is fetched.
        graph = directory / _scoring_graph(directory)
        results["ort_graph"] = graph.name
        ort_rate, ort_errors = _ort_rows_per_s(graph, x32, args.batch_size)
        results["ort_rows_per_s_one_core"] = ort_rate
        # The HTTP path runs the model on its requests' batches: its own baseline.
        http_ort_rate, _ = _ort_rows_per_s(graph, x32[: args.rows], args.http_batch)
        results["ort_http_batch_rows_per_s_one_core"] = http_ort_rate

        loop = _loop_seconds(models, args.model, tmp / "rows", tmp / "scores-loop", args.batch_size)
        _check_table(tmp / "scores-loop", ort_errors[: args.rows])
        results["loop_seconds"], results["loop_rows_per_s"] = loop, args.rows / loop

        _ray_paths(results, args, tmp, ort_errors)

        with _service(models, args.cpus, tmp / "service.log") as port:
            rows, clients = x32[: args.rows], 2 * args.cpus
            binary, errors = _http_rows_per_s(port, args.model, rows, args.http_batch, clients, False)
            check_scores(np.arange(len(errors)), errors, ort_errors[: args.rows])
            sample = x32[: results["json_rows"]]
            as_json, errors = _http_rows_per_s(port, args.model, sample, args.http_batch, clients, True)
            check_scores(np.arange(len(errors)), errors, ort_errors[: len(sample)])
        results |= {"http_raw_rows_per_s": binary, "http_json_rows_per_s": as_json}
    results["machine"]["load_average_after"] = os.getloadavg()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the backlog (default 1,000,000)")
    parser.add_argument("--model", default="digits-plain", help="a shipped model (default digits-plain)")
    parser.add_argument(
        "--cpus", type=int, default=2, help="cores for Ray and the service (default 2, at least 2)"
    )
    parser.add_argument("--batch-size", type=int, default=16384, help="rows per model run (ORT, loop, Ray)")
    parser.add_argument("--http-batch", type=int, default=1024, help="rows per HTTP request")
    parser.add_argument("--json-rows", type=int, default=100_000, help="rows sent as JSON")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    for flag in ("rows", "cpus", "batch_size", "http_batch", "json_rows"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.cpus < 2:
        parser.error(
            "--cpus must be at least 2: Ray Data needs a CPU for reading and writing beside its actors"
        )
    if not (ROOT / "models" / args.model / "1").is_dir():
        parser.error(f"--model {args.model}: no shipped model of that name in models/")
    results = run(args, argv)
    results["table"] = table(results)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{results['command']}  ({results['date']}, commit {results['commit']})\n")
    print(results["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
