"""The digits encoder served by this service and by the frameworks a user would pick instead, side by side.

    python -m bench.frameworks --setup /work/venvs      # one venv per framework (pip; never torch)
    python -m bench.frameworks --venvs /work/venvs [--seconds 10] [--rounds 2] [--only service,kserve,...]
        [--out artifacts/bench/frameworks]

Without a folder, both use ~/.cache/autoencoder-serving/venvs. Run them from the repository root with the
project's own environment (the benchmark imports `bench`, `tests.live` and onnxruntime; the frameworks run
only in their venvs, and their apps import nothing of this project).

The same file, `models/digits-plain/1/encoder.onnx` (`x` (batch, 64) float32 -> `latent` (batch, 16)), is
served by this service's `/encode`, MLServer 1.7 (a custom `MLModel`; its defaults, and `parallel_workers` 0),
KServe's Python `ModelServer` (v2 JSON, the body MLServer takes), LitServe (a `LitAPI`) and BentoML (a
`@bentoml.service` taking a list of rows). `bench.frameworks_apps` says how each app is written and started:
one worker process, one model replica, one ONNX Runtime intra-op and inter-op thread, no access log and the
framework's default batching. Each framework runs from its own venv under `--venvs` (`--setup` makes them);
one without a venv is reported as skipped. Each server is started on a free loopback port, waited for, and
its answers at batch 1 and 64 are checked against ONNX Runtime in-process (max abs diff <= 1e-4): a framework
that answers wrongly is reported as failed and never timed. Then wrk (one thread, 32 connections) posts a JSON
batch of 1 and of 64 rows for `--seconds` each, after a 1 s warm-up. Rounds interleave (round 1 runs every
framework, then round 2 runs every framework, each server started afresh) and each figure is the median over
the rounds. The server's CPU is that of every process it started (its session and its descendants), so it
counts the worker processes some frameworks spawn, and never wrk's. Results go to `--out` as
`latest.{json,md}` and a dated copy. wrk shares the machine's cores with the server: compare ratios from one
run, not absolute figures across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.frameworks_apps import FRAMEWORKS, Framework
from bench.frameworks_report import machine, markdown_report, versions
from bench.frameworks_server import (
    AppServer,
    WrongAnswerError,
    check_answer,
    tree_cpu_seconds,
    tree_pids,
    wait_idle,
)
from bench.frameworks_setup import setup_venvs
from bench.load import Request, run_wrk

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "digits-plain" / "1" / "encoder.onnx"
DEFAULT_OUT = ROOT / "artifacts" / "bench" / "frameworks"
DEFAULT_VENVS = Path.home() / ".cache" / "autoencoder-serving" / "venvs"
BATCHES = (1, 64)
CONCURRENCY = 32
WARMUP_S = 1
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Case:
    """One batch size: the rows every framework is sent and what ONNX Runtime in-process answers."""

    batch: int
    rows: np.ndarray  # (batch, 64) float32, as the JSON bodies carry them
    expected: np.ndarray  # (batch, 16) latents from ONNX Runtime in-process


def _cases() -> list[Case]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(MODEL), sess_options=options, providers=["CPUExecutionProvider"])
    cases = []
    for batch in BATCHES:
        # Pixel values in the digits' range, rounded so the JSON text is the exact float32 the server reads.
        rows = np.random.default_rng(batch).uniform(0, 16, (batch, 64)).round(3).astype(np.float32)
        cases.append(Case(batch, rows, session.run(["latent"], {"x": rows})[0]))
    return cases


def _request(framework: Framework, case: Case, folder: Path) -> Request:
    body = folder / f"{framework.key}-b{case.batch}.json"
    body.write_bytes(framework.body(case.rows))
    return Request(framework.infer_path, body, {"Content-Type": "application/json"})


def _load(url: str, request: Request, batch: int, seconds: int, folder: Path, pid: int) -> dict[str, Any]:
    before = tree_cpu_seconds(pid)
    result = run_wrk(url, request, CONCURRENCY, seconds, folder)
    cpu = tree_cpu_seconds(pid) - before
    return {
        "requests_per_s": result.requests_per_s,
        "samples_per_s": result.requests_per_s * batch,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "errors": result.non_2xx + result.socket_errors,
        "server_cpu_us_per_request": cpu / max(result.requests, 1) * 1e6,
        "server_processes": len(tree_pids(pid)),
    }


def _one_round(
    framework: Framework, venvs: Path, cases: list[Case], seconds: int, folder: Path
) -> dict[int, dict[str, Any]]:
    """Start the framework's server, check its answers, time each batch size, stop it."""
    home = folder / framework.key
    bin_dir = venvs / framework.venv / "bin" if framework.venv else Path(sys.executable).parent
    with AppServer(framework, home, MODEL, bin_dir, START_TIMEOUT_S) as server:
        requests = {case.batch: _request(framework, case, home) for case in cases}
        for case in cases:
            check_answer(framework, server.url, requests[case.batch], case.expected)
        found = {}
        for case in cases:
            run_wrk(server.url, requests[case.batch], CONCURRENCY, WARMUP_S, home)
            wait_idle(server.pid)
            found[case.batch] = _load(server.url, requests[case.batch], case.batch, seconds, home, server.pid)
            wait_idle(server.pid)
        return found


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (with two rounds, their mean), and the rounds' requests/s."""
    found = {name: round(statistics.median(r[name] for r in runs), 2) for name in runs[0]}
    found["errors"] = sum(r["errors"] for r in runs)
    found["rounds_requests_per_s"] = [round(r["requests_per_s"], 1) for r in runs]
    return found


def _skipped(frameworks: list[Framework], venvs: Path) -> dict[str, str]:
    status = {}
    for framework in frameworks:
        if framework.venv and not (venvs / framework.venv / "bin" / "python").exists():
            status[framework.key] = (
                f"skipped: no venv at {venvs / framework.venv} (python -m bench.frameworks --setup {venvs})"
            )
    return status


def measure(frameworks: list[Framework], venvs: Path, seconds: int, rounds: int) -> dict[str, Any]:
    """Every framework once per round, rounds in turn; {key: {"status", "results"}}."""
    status = _skipped(frameworks, venvs)
    runs: dict[str, list[dict[int, dict[str, Any]]]] = {f.key: [] for f in frameworks}
    with tempfile.TemporaryDirectory(prefix="ae-bench-frameworks-") as tmp:
        cases = _cases()
        for number in range(rounds):
            for framework in frameworks:
                if framework.key in status:
                    continue
                print(f"round {number + 1}/{rounds}: {framework.key} ...", file=sys.stderr, flush=True)
                try:
                    folder = Path(tmp) / f"round-{number + 1}"
                    runs[framework.key].append(_one_round(framework, venvs, cases, seconds, folder))
                except WrongAnswerError as exc:
                    status[framework.key] = f"failed: wrong answer: {exc}"
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    status[framework.key] = f"failed: {exc}"
                if framework.key in status:
                    print(f"  {status[framework.key]}", file=sys.stderr, flush=True)
    found: dict[str, Any] = {}
    for framework in frameworks:
        done = runs[framework.key]
        results = {} if framework.key in status else {b: _median([r[b] for r in done]) for b in BATCHES}
        found[framework.key] = {"status": status.get(framework.key, "ok"), "results": results}
    return found


def _rounded(average: tuple[float, float, float]) -> list[float]:
    return [round(v, 2) for v in average]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.frameworks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--setup",
        type=Path,
        nargs="?",
        const=DEFAULT_VENVS,
        metavar="DIR",
        help="create a venv per framework",
    )
    parser.add_argument(
        "--venvs", type=Path, default=DEFAULT_VENVS, help=f"one venv per framework (default {DEFAULT_VENVS})"
    )
    parser.add_argument("--seconds", type=int, default=10, help="of load per batch size and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every framework (median reported)")
    parser.add_argument(
        "--only", help="comma-separated framework keys: " + ",".join(f.key for f in FRAMEWORKS)
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.setup:
        return 1 if setup_venvs(args.setup) else 0
    keys = args.only.split(",") if args.only else [f.key for f in FRAMEWORKS]
    unknown = sorted(set(keys) - {f.key for f in FRAMEWORKS})
    if unknown:
        raise SystemExit(
            f"unknown framework {', '.join(unknown)}; known: {', '.join(f.key for f in FRAMEWORKS)}"
        )
    frameworks = [f for f in FRAMEWORKS if f.key in keys]
    started, load_before = time.monotonic(), os.getloadavg()
    found = measure(frameworks, args.venvs, args.seconds, args.rounds)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    settings = {
        "model": str(MODEL.relative_to(ROOT)),
        "seconds": args.seconds,
        "warmup_s": WARMUP_S,
        "rounds": args.rounds,
        "concurrency": CONCURRENCY,
        "wrk_threads": 1,
        "took_s": round(time.monotonic() - started),
    }
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.stdout.strip(),
        "machine": machine()
        | {"load_average_before": _rounded(load_before), "load_average_after": _rounded(os.getloadavg())},
        "settings": settings,
        "frameworks": {
            f.key: {"label": f.label, "batching": f.batching, "versions": versions(f, args.venvs)}
            | found[f.key]
            for f in frameworks
        },
    }
    text = markdown_report(report)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"results-{stamp}", "latest"):
        (args.out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
        (args.out / f"{name}.md").write_text(text)
    print(f"written to {args.out}/latest.md and latest.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
