"""Run the whole benchmark and print one table; see `python -m bench --help`.

Every server runs under the same uvicorn (uvloop, httptools, no access log) on loopback, and wrk (one thread)
shares the machine's cores with it: compare ratios from one run, not absolute figures across machines.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from bench.apps import ANSWERS_ENV, CASE_HEADER, MODELS_ENV
from bench.inprocess import in_process_samples_per_s, session
from bench.load import LoadResult, Request, run_wrk
from bench.models import SYNTHETIC_NAME, build_repository, feature_range
from service.settings import Settings

__all__ = ["Scenario", "main"]

BodyKind = Literal["json", "binary"]
System = Literal["service", "batched", "floor", "naive"]
SYSTEM_LABELS: dict[str, str] = {
    "service": "service",
    "batched": "service + micro-batching",
    "floor": "floor (no model)",
    "naive": "naive (pydantic + torch)",
}
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "artifacts" / "bench"
TARGET_FLOOR = 0.45
TARGET_NAIVE = 3.0
TARGET_IN_PROCESS = 0.6


@dataclass(frozen=True)
class Scenario:
    body: BodyKind
    batch: int
    concurrency: int

    @property
    def name(self) -> str:
        return f"{self.body} b{self.batch} c{self.concurrency}"


def _s(body: BodyKind, batch: int, concurrency: int) -> Scenario:
    return Scenario(body, batch, concurrency)


FULL_ONE_WORKER = [
    _s("json", 1, 1),
    _s("json", 1, 8),
    _s("json", 1, 32),
    _s("json", 64, 32),
    _s("binary", 1, 32),
    _s("binary", 64, 32),
]
FULL_TWO_WORKERS = [_s("json", 1, 32), _s("json", 64, 32), _s("binary", 64, 32)]
QUICK_ONE_WORKER = [_s("json", 1, 32), _s("json", 64, 32), _s("binary", 64, 32)]


@dataclass
class Cell:
    model: str
    scenario: str
    body: str
    batch: int
    concurrency: int
    workers: int
    system: str
    requests: int
    requests_per_s: float
    samples_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    vs_floor: float | None = None
    vs_naive: float | None = None
    vs_in_process: float | None = None


@dataclass(frozen=True)
class ModelData:
    name: str
    directory: Path
    x: np.ndarray  # (64, input_dim) float32 rows in the training range
    reference: np.ndarray  # (64, input_dim) ONNX Runtime's reconstruction of x


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


@contextmanager
def _server(factory: str, workers: int, env: dict[str, str], health: str, log: Path) -> Iterator[int]:
    """Start `uvicorn --factory factory` on a free loopback port; yield the port once `health` answers 200."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
        "--http", "httptools",
    ]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, env=os.environ | env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        ready = 0
        while ready < workers * 3:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{factory} did not start; its log ends:\n{log.read_text()[-2000:]}")
            try:
                ready = ready + 1 if _get(port, health) == 200 else 0
            except OSError:
                ready = 0
            time.sleep(0.2)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _case(model: str, scenario: Scenario) -> str:
    return f"{model}-{scenario.body}-b{scenario.batch}"


def _request(data: ModelData, scenario: Scenario, bodies: Path) -> Request:
    case = _case(data.name, scenario)
    x = data.x[: scenario.batch]  # (batch, input_dim)
    path = bodies / f"{case}.req"
    if scenario.body == "json":
        if not path.exists():
            path.write_bytes(
                orjson.dumps({"model": data.name, "inputs": x}, option=orjson.OPT_SERIALIZE_NUMPY)
            )
        headers = {"Content-Type": "application/json", CASE_HEADER: case}
        return Request("/denoise", path, headers)
    if not path.exists():
        path.write_bytes(np.ascontiguousarray(x, dtype="<f4").tobytes())
    headers = {
        "Content-Type": "application/octet-stream",
        "Accept": "application/octet-stream",
        "X-Tensor-Shape": f"{x.shape[0]},{x.shape[1]}",
        CASE_HEADER: case,
    }
    return Request(f"/denoise?model={data.name}", path, headers)


def _post(port: int, request: Request) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", request.path, body=request.body.read_bytes(), headers=request.headers)
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("content-type") or ""
    finally:
        conn.close()


def _check_answer(system: str, data: ModelData, scenario: Scenario, status: int, body: bytes) -> None:
    """The answer is a 200 carrying ONNX Runtime's reconstruction (floor answers are the service's copy)."""
    if status != 200:
        raise RuntimeError(f"{system} answered {status} to {_case(data.name, scenario)}: {body[:300]!r}")
    if scenario.body == "json":
        got = np.asarray(orjson.loads(body)["outputs"], dtype=np.float32)
    else:
        got = np.frombuffer(body, dtype="<f4").reshape(scenario.batch, -1)
    want = data.reference[: scenario.batch]
    tolerance = 1e-4 * max(1.0, float(np.abs(want).max()))
    if got.shape != want.shape or float(np.abs(got - want).max()) > tolerance:
        raise RuntimeError(f"{system} gave a wrong reconstruction for {_case(data.name, scenario)}")


def _cell(system: str, workers: int, data: ModelData, scenario: Scenario, result: LoadResult) -> Cell:
    return Cell(
        model=data.name,
        scenario=scenario.name,
        body=scenario.body,
        batch=scenario.batch,
        concurrency=scenario.concurrency,
        workers=workers,
        system=system,
        requests=result.requests,
        requests_per_s=result.requests_per_s,
        samples_per_s=result.requests_per_s * scenario.batch,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        non_2xx=result.non_2xx,
        socket_errors=result.socket_errors,
    )


def _print_cell(c: Cell) -> None:
    errors = c.non_2xx + c.socket_errors
    print(
        f"  {c.model:>14} {c.scenario:<16} w{c.workers} {c.system:<8} {c.requests_per_s:9.0f} req/s "
        f"{c.samples_per_s:10.0f} samples/s  p50 {c.p50_ms:7.2f} ms  p99 {c.p99_ms:7.2f} ms  errors {errors}",
        flush=True,
    )


def _drive(
    system: str,
    workers: int,
    port: int,
    models: list[ModelData],
    scenarios: list[Scenario],
    tmp: Path,
    args: argparse.Namespace,
    answers: Path | None,
) -> list[Cell]:
    cells = []
    for data in models:
        for scenario in scenarios:
            request = _request(data, scenario, tmp)
            status, body, media_type = _post(port, request)
            if system != "floor":
                _check_answer(system, data, scenario, status, body)
            if answers is not None:
                case = _case(data.name, scenario)
                (answers / f"{case}.body").write_bytes(body)
                (answers / f"{case}.type").write_text(media_type)
            if args.warmup:
                run_wrk(f"http://127.0.0.1:{port}", request, scenario.concurrency, args.warmup, tmp)
            result = run_wrk(f"http://127.0.0.1:{port}", request, scenario.concurrency, args.duration, tmp)
            cell = _cell(system, workers, data, scenario, result)
            _print_cell(cell)
            cells.append(cell)
    return cells


def _ratios(cells: list[Cell], in_process: dict[tuple[str, int, int], float]) -> None:
    index = {(c.model, c.scenario, c.workers, c.system): c for c in cells}
    for c in cells:
        if c.system not in ("service", "batched"):
            continue
        floor = index.get((c.model, c.scenario, c.workers, "floor"))
        naive = index.get((c.model, c.scenario, c.workers, "naive"))
        if floor and floor.requests_per_s:
            c.vs_floor = c.requests_per_s / floor.requests_per_s
        if naive and naive.samples_per_s:
            c.vs_naive = c.samples_per_s / naive.samples_per_s
        reference = in_process.get((c.model, c.batch, c.workers))
        if reference:
            c.vs_in_process = c.samples_per_s / reference


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table(cells: list[Cell]) -> str:
    """The results as one markdown table."""
    order = {"service": 0, "batched": 1, "floor": 2, "naive": 3}
    lines = [
        "| model | scenario | workers | system | req/s | samples/s | p50 ms | p99 ms | errors | "
        "x floor req/s | x naive samples/s | x in-process samples/s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in sorted(
        cells, key=lambda c: (c.model, c.workers, c.body, c.batch, c.concurrency, order[c.system])
    ):
        lines.append(
            f"| {c.model} | {c.scenario} | {c.workers} | {SYSTEM_LABELS[c.system]} | "
            f"{c.requests_per_s:,.0f} | {c.samples_per_s:,.0f} | {c.p50_ms:.2f} | {c.p99_ms:.2f} | "
            f"{c.non_2xx + c.socket_errors} | {_ratio(c.vs_floor)} | {_ratio(c.vs_naive)} | "
            f"{_ratio(c.vs_in_process)} |"
        )
    return "\n".join(lines)


def in_process_table(in_process: dict[tuple[str, int, int], float]) -> str:
    lines = ["| model | batch | threads | samples/s |", "|---|---:|---:|---:|"]
    for (model, batch, threads), value in sorted(in_process.items()):
        lines.append(f"| {model} | {batch} | {threads} | {value:,.0f} |")
    return "\n".join(lines)


def default_system() -> System:
    """The service as configured by default: with micro-batching or without (AE_BATCHING)."""
    return "batched" if Settings().batching else "service"


def targets(cells: list[Cell]) -> tuple[str, bool]:
    """Each target's measured ratio per model and worker count (service in its default configuration),
    and whether all of them hold."""
    checks: list[tuple[str, float | None, float]] = []
    for c in cells:
        if c.system != default_system():
            continue
        where = f"{c.model}, {c.workers} worker{'s' if c.workers > 1 else ''}"
        if c.scenario == "json b1 c32" and c.workers == 1:
            checks.append((f"JSON b1 c32 service/floor req/s ({where})", c.vs_floor, TARGET_FLOOR))
        if c.body == "json" and c.batch == 64:
            checks.append((f"JSON b64 service/naive samples/s ({where})", c.vs_naive, TARGET_NAIVE))
        if c.body == "binary" and c.batch == 64:
            checks.append(
                (f"binary b64 service/in-process samples/s ({where})", c.vs_in_process, TARGET_IN_PROCESS)
            )
    errors = sum(c.non_2xx + c.socket_errors for c in cells)
    lines = ["| target | measured | needed | holds |", "|---|---:|---:|---|"]
    ok = errors == 0
    for what, value, needed in checks:
        holds = value is not None and value >= needed
        ok = ok and holds
        lines.append(f"| {what} | {_ratio(value)} | {needed} | {'yes' if holds else 'NO'} |")
    lines.append(
        f"| errors (non-2xx + socket) in all cells | {errors} | 0 | {'yes' if errors == 0 else 'NO'} |"
    )
    return "\n".join(lines), ok


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    names = ["onnxruntime", "fastapi", "uvicorn", "orjson", "numpy", "torch"]
    return {
        "cpu": cpu,
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "libraries": {n: package_version(n) for n in names},
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout.split(
            "\n"
        )[0],
    }


def _load_models(repository: Path, batch: int) -> list[ModelData]:
    found = []
    for directory in sorted(repository.glob("*/1")):
        low, high = feature_range(directory)
        rng = np.random.default_rng(1)
        x = (low + (high - low) * rng.random((batch, low.shape[0]))).astype(np.float32)  # (batch, input_dim)
        reference = session(directory / "model.onnx").run(["reconstruction"], {"x": x})[0]
        found.append(ModelData(directory.parent.name, directory, x, reference))
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer scenarios, 2 s per cell, one worker only")
    parser.add_argument("--duration", type=int, help="seconds of load per cell (default 5, quick 2)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up load per cell (default 2, quick 1)")
    parser.add_argument(
        "--model", default="digits-plain", help="shipped model to measure (default digits-plain)"
    )
    parser.add_argument("--steps", type=int, default=200, help="training steps of the synthetic 784 model")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"results directory (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    one_worker = QUICK_ONE_WORKER if args.quick else FULL_ONE_WORKER
    two_workers = [] if args.quick else FULL_TWO_WORKERS
    info = machine()
    print(f"machine: {info['cpus']} CPUs, {info['cpu']}, load average {info['load_average']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ae-bench-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"building the model repository ({args.model} + synthetic {SYNTHETIC_NAME}) ...", flush=True)
        repository = build_repository(tmp / "repo", args.model, args.steps)
        models = _load_models(repository, 64)
        answers = tmp / "answers"
        answers.mkdir()
        log = tmp / "servers.log"

        in_process: dict[tuple[str, int, int], float] = {}
        thread_counts = [1, 2] if two_workers else [1]
        for data in models:
            for batch in (1, 64):
                for threads in thread_counts:
                    value = in_process_samples_per_s(
                        data.directory / "model.onnx", data.x[:batch], 1.0 if args.quick else 2.0, threads
                    )
                    in_process[(data.name, batch, threads)] = value
                    print(
                        f"  {data.name:>14} in-process b{batch} {threads} thread(s): {value:,.0f} samples/s"
                    )

        service_env = {"AE_MODELS_DIR": str(repository)}
        # Batching runs the one-worker scenarios, so the two compare cell by cell.
        runs: list[tuple[System, int, list[Scenario]]] = [
            ("service", 1, one_worker),
            ("batched", 1, one_worker),
            ("floor", 1, one_worker),
            ("naive", 1, [s for s in one_worker if s.body == "json"]),
        ]
        if two_workers:
            runs += [(default_system(), 2, two_workers), ("floor", 2, two_workers)]
            runs += [("naive", 2, [s for s in two_workers if s.body == "json"])]
        cells: list[Cell] = []
        for system, workers, scenarios in runs:
            if system in ("service", "batched"):
                env = service_env | {
                    "AE_WORKERS": str(workers),
                    "AE_BATCHING": str(system == "batched").lower(),
                }
                factory, health = "service.app:create_app", "/readyz"
            elif system == "floor":
                env, factory, health = {ANSWERS_ENV: str(answers)}, "bench.apps:create_floor_app", "/healthz"
            else:
                env, factory, health = (
                    {MODELS_ENV: str(repository)},
                    "bench.apps:create_naive_app",
                    "/healthz",
                )
            print(f"{SYSTEM_LABELS[system]}, {workers} worker(s):", flush=True)
            keep = answers if (system, workers) == ("service", 1) else None
            with _server(factory, workers, env, health, log) as port:
                cells += _drive(system, workers, port, models, scenarios, tmp, args, keep)

    _ratios(cells, in_process)
    results = table(cells)
    target_lines, ok = targets(cells)
    info["load_average_after"] = os.getloadavg()
    elapsed = time.monotonic() - started
    header = (
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), Python {info['python']}, "
        + ", ".join(f"{k} {v}" for k, v in info["libraries"].items())
        + f", {info['wrk']}. Load average before/after: {info['load_average']} / "
        + f"{info['load_average_after']}. "
        + f"{args.duration} s per cell after {args.warmup} s warm-up; wrk -t1. Run took {elapsed:.0f} s."
    )
    report = (
        f"{header}\n\nTargets are checked on the {SYSTEM_LABELS[default_system()]} rows (the default "
        f"configuration).\n\n{results}\n\n"
        "ONNX Runtime in-process (same files, 1 intra-op thread per session):\n\n"
        f"{in_process_table(in_process)}\n\nTargets:\n\n{target_lines}\n"
    )
    print("\n" + report)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    payload = {
        "machine": info,
        "settings": {"duration_s": args.duration, "warmup_s": args.warmup, "quick": args.quick},
        "cells": [asdict(c) for c in cells],
        "in_process": [
            {"model": m, "batch": b, "threads": t, "samples_per_s": v} for (m, b, t), v in in_process.items()
        ],
        "targets_hold": ok,
    }
    for name in (f"results-{stamp}", "latest"):
        (args.out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(report)
    print(f"written to {args.out}/latest.md and latest.json; targets {'hold' if ok else 'DO NOT all hold'}")
    return 0
