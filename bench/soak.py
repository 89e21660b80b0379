"""Soak test: mixed traffic against a real server for a long time; checks answers, errors and memory growth.

`python -m bench.soak --duration 600` starts `python -m service --workers 2` on the repository's models
(with an API key, so the key check is on the path), warms it up, then runs `--concurrency` clients that send
a weighted mix of every endpoint, JSON and binary, good requests and bad ones. Every good answer is checked
against ONNX Runtime run locally on the same model files; every bad one must get its expected 4xx. At the end
it prints requests, answers by status, p50/p99 latency, and the workers' resident memory (summed over the
worker processes, from /proc) after warm-up and at the end. Exit status 1 when any answer was a 5xx, a
connection error, wrong, or memory grew more than `--max-rss-growth`.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.core.registry import ModelRegistry
from service.core.runtime import OnnxModel

ROOT = Path(__file__).resolve().parent.parent
KEY = "soak-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}

Check = Callable[[httpx.Response], str | None]
"""None when the answer is right, else what was wrong."""


@dataclass(frozen=True)
class Call:
    kind: str
    method: str
    path: str
    check: Check
    content: bytes | None = None
    headers: dict[str, str] | None = None


def _close(got: Any, want: np.ndarray[Any, Any]) -> bool:
    arr = np.asarray(got, dtype=np.float32)
    return arr.shape == want.shape and bool(np.allclose(arr, want, rtol=1e-4, atol=1e-4))


def _json_check(field: str, want: np.ndarray[Any, Any]) -> Check:
    def check(r: httpx.Response) -> str | None:
        if r.status_code != 200:
            return f"status {r.status_code}: {r.text[:200]}"
        return None if _close(r.json()[field], want) else f"{field} differs from ONNX Runtime"

    return check


def _raw_check(want: np.ndarray[Any, Any]) -> Check:
    def check(r: httpx.Response) -> str | None:
        if r.status_code != 200:
            return f"status {r.status_code}: {r.text[:200]}"
        shape = tuple(int(d) for d in r.headers["x-tensor-shape"].split(","))
        got = np.frombuffer(r.content, dtype="<f4").reshape(shape)
        return None if _close(got, want) else "binary answer differs from ONNX Runtime"

    return check


def _npy_check(want: np.ndarray[Any, Any]) -> Check:
    def check(r: httpx.Response) -> str | None:
        if r.status_code != 200:
            return f"status {r.status_code}: {r.text[:200]}"
        got = np.load(io.BytesIO(r.content), allow_pickle=False)
        return None if _close(got, want) else "npy answer differs from ONNX Runtime"

    return check


def _v2_check(want: np.ndarray[Any, Any]) -> Check:
    def check(r: httpx.Response) -> str | None:
        if r.status_code != 200:
            return f"status {r.status_code}: {r.text[:200]}"
        out = {o["name"]: o for o in r.json()["outputs"]}["reconstruction"]
        got = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        return None if _close(got, want) else "v2 reconstruction differs from ONNX Runtime"

    return check


def _status_check(status: int, message: str = "") -> Check:
    def check(r: httpx.Response) -> str | None:
        if r.status_code != status:
            return f"expected {status}, got {r.status_code}: {r.text[:200]}"
        return None if message in r.text else f"message lacks {message!r}: {r.text[:200]}"

    return check


def _npy(arr: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr)
    return buffer.getvalue()


def build_calls(models: list[OnnxModel], seed: int = 0) -> list[tuple[float, Call]]:
    """(weight, call) for every model: good requests with their expected answers, and bad ones."""
    rng = np.random.default_rng(seed)
    calls: list[tuple[float, Call]] = []
    json_ct = {"content-type": "application/json", **AUTH}
    for model in models:
        meta = model.metadata
        name = meta.name
        lo = np.asarray(meta.data.feature_min, dtype=np.float32)
        hi = np.asarray(meta.data.feature_max, dtype=np.float32)
        for rows in (1, 8, 64):
            x = (lo + (hi - lo) * rng.random((rows, meta.input_dim))).astype(np.float32)  # (rows, input_dim)
            body = json.dumps({"model": name, "inputs": x.tolist()}).encode()
            latent = model.encode(x).latent
            recon = model.denoise(x)
            errors = model.score(x).errors
            calls.append(
                (2, Call("encode_json", "POST", "/encode", _json_check("latents", latent), body, json_ct))
            )
            raw_headers = {
                "content-type": "application/octet-stream",
                "accept": "application/octet-stream",
                "x-tensor-shape": f"{rows},{meta.input_dim}",
                **AUTH,
            }
            calls.append(
                (
                    3,
                    Call(
                        "denoise_raw",
                        "POST",
                        f"/denoise?model={name}",
                        _raw_check(recon),
                        x.astype("<f4").tobytes(),
                        raw_headers,
                    ),
                )
            )
            calls.append(
                (
                    2,
                    Call(
                        "score_json",
                        "POST",
                        "/reconstruction-error",
                        _json_check("errors", errors),
                        body,
                        json_ct,
                    ),
                )
            )
            npy_headers = {"content-type": "application/x-npy", "accept": "application/x-npy", **AUTH}
            calls.append(
                (
                    1,
                    Call(
                        "decode_npy",
                        "POST",
                        f"/decode?model={name}",
                        _npy_check(model.decode(latent)),
                        _npy(latent),
                        npy_headers,
                    ),
                )
            )
            v2 = {
                "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
                ]
            }
            v2["outputs"] = [{"name": "reconstruction"}]
            calls.append(
                (
                    2,
                    Call(
                        "v2_infer",
                        "POST",
                        f"/v2/models/{name}/infer",
                        _v2_check(recon),
                        json.dumps(v2).encode(),
                        json_ct,
                    ),
                )
            )
        if meta.generative:
            body = json.dumps({"model": name, "n": 4, "seed": 11}).encode()
            calls.append(
                (
                    1,
                    Call(
                        "sample",
                        "POST",
                        "/sample",
                        _json_check("outputs", model.sample(4, 11)),
                        body,
                        json_ct,
                    ),
                )
            )
        # Bad requests, each with the answer it must get.
        bad_row = json.dumps({"model": name, "inputs": [[0.0] * (meta.input_dim + 1)]}).encode()
        calls.append(
            (0.5, Call("bad_width", "POST", "/encode", _status_check(422, "values"), bad_row, json_ct))
        )
        nan = f'{{"model": "{name}", "inputs": [[NaN{", 0.0" * (meta.input_dim - 1)}]]}}'.encode()
        calls.append((0.5, Call("bad_nan", "POST", "/denoise", _status_check(422, "NaN"), nan, json_ct)))
    some = models[0].metadata.name
    good = json.dumps({"model": some, "inputs": [[0.0] * models[0].metadata.input_dim]}).encode()
    calls += [
        (
            0.5,
            Call("bad_json", "POST", "/encode", _status_check(400, "malformed JSON"), b'{"model": ', json_ct),
        ),
        (
            0.5,
            Call(
                "unknown_model",
                "POST",
                "/encode",
                _status_check(404, "unknown model"),
                good.replace(some.encode(), b"../x"),
                json_ct,
            ),
        ),
        (
            0.5,
            Call(
                "no_key",
                "POST",
                "/encode",
                _status_check(401, "missing API key"),
                good,
                {"content-type": "application/json"},
            ),
        ),
        (0.5, Call("healthz", "GET", "/healthz", _status_check(200, "ok"))),
        (0.5, Call("readyz", "GET", "/readyz", _status_check(200, "ready"))),
        (0.3, Call("models", "GET", "/models", _status_check(200, some), headers=AUTH)),
        (0.2, Call("metrics", "GET", "/metrics", _status_check(200, "ae_requests_total"), headers=AUTH)),
    ]
    return calls


@dataclass
class Stats:
    requests: int = 0
    connection_errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    wrong: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


async def run_traffic(url: str, calls: list[tuple[float, Call]], concurrency: int, seconds: float) -> Stats:
    stats = Stats()
    weights = [w for w, _ in calls]
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(seed: int) -> None:
        rnd = random.Random(seed)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            while time.monotonic() < deadline:
                (call,) = rnd.choices([c for _, c in calls], weights)
                start = time.perf_counter()
                try:
                    r = await client.request(
                        call.method, call.path, content=call.content, headers=call.headers
                    )
                except httpx.TransportError as exc:
                    stats.connection_errors += 1
                    stats.wrong[f"{call.kind}: {type(exc).__name__}"] += 1
                    continue
                stats.latencies.append(time.perf_counter() - start)
                stats.requests += 1
                stats.statuses[r.status_code] += 1
                stats.kinds[call.kind] += 1
                problem = call.check(r)
                if problem:
                    stats.wrong[f"{call.kind}: {problem[:120]}"] += 1

    await asyncio.gather(*(client_loop(i) for i in range(concurrency)))
    return stats


def worker_pids(master: int) -> list[int]:
    """The server's worker processes: the master's children (uvicorn's workers), or the master alone."""
    children: list[int] = []
    for task in Path(f"/proc/{master}/task").iterdir():
        text = (task / "children").read_text().split()
        children += [int(pid) for pid in text]
    # Multiprocessing may add a resource tracker: keep only processes that run the service.
    workers = [
        pid for pid in children if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return workers or [master]


def wait_for_workers(master: int, workers: int, timeout: float = 60.0) -> list[int]:
    """The server's worker PIDs once `workers` of them run: /readyz answers as soon as the first worker is
    up, and a later one would otherwise look like a restart (and be missing from the start memory)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = worker_pids(master)
        if len(pids) >= workers or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def start_server(models: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "AE_API_KEYS": KEY}
    cmd = [sys.executable, "-m", "service", "--port", str(port), "--models", str(models)]
    cmd += ["--workers", str(workers), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60, help="measured seconds (default 60)")
    parser.add_argument("--warm-up", type=float, default=15, help="seconds of traffic before measuring")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--max-rss-growth", type=float, default=0.10, help="allowed growth (default 0.10)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    registry = ModelRegistry(args.models, providers=["CPUExecutionProvider"], warm_up=False)
    snapshot = registry.load()
    models = [snapshot.get(name) for name in snapshot.names() if snapshot.versions(name)]
    calls = build_calls(models)
    proc, url = start_server(args.models, args.workers)
    try:
        pids = wait_for_workers(proc.pid, args.workers)
        if len(pids) < args.workers:
            raise SystemExit(f"only {len(pids)} of {args.workers} workers started within 60 s: {pids}")
        print(f"server {url}: master {proc.pid}, workers {pids}; {len(calls)} request kinds", flush=True)
        asyncio.run(run_traffic(url, calls, args.concurrency, args.warm_up))
        rss_start = rss_bytes(pids)
        start = time.monotonic()
        stats = asyncio.run(run_traffic(url, calls, args.concurrency, args.duration))
        elapsed = time.monotonic() - start
        rss_end = rss_bytes(pids)
        alive = proc.poll() is None and worker_pids(proc.pid) == pids
    finally:
        proc.terminate()
        rc = proc.wait(timeout=60)
    server_errors = sum(n for s, n in stats.statuses.items() if s >= 500)
    growth = (rss_end - rss_start) / rss_start
    result = {
        "duration_s": round(elapsed, 1),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "requests": stats.requests,
        "requests_per_s": round(stats.requests / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(stats.statuses.items())},
        "server_errors_5xx": server_errors,
        "connection_errors": stats.connection_errors,
        "wrong_answers": sum(stats.wrong.values()),
        "wrong_examples": dict(stats.wrong.most_common(5)),
        "p50_ms": round(percentile(stats.latencies, 50), 2),
        "p99_ms": round(percentile(stats.latencies, 99), 2),
        "worker_rss_start_mib": round(rss_start / 2**20, 1),
        "worker_rss_end_mib": round(rss_end / 2**20, 1),
        "worker_rss_growth_pct": round(100 * growth, 2),
        "workers_restarted": not alive,
        "server_exit_code": rc,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = (
        server_errors or stats.connection_errors or result["wrong_answers"] or growth > args.max_rss_growth
    )
    return 1 if failed or not alive or rc != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
