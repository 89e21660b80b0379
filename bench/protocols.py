"""REST, v2 over HTTP and v2 over gRPC on one server, side by side; and REST against an earlier commit.

`python -m bench.protocols [--models DIR] [--model digits-plain] [--seconds 10] [--rounds 3]
[--baseline REF] [--perf-analyzer] [--out results.json]`

One `python -m service` (one worker, default settings, gRPC on) serves every case, driven in turn by wrk
(one thread, 32 connections) for the REST and v2 HTTP bodies, and, with `--perf-analyzer`, by NVIDIA's
perf_analyzer run unmodified (`bench.perf_analyzer`: HTTP binary and JSON, gRPC; batch 1 and 64, concurrency
32). With `--baseline REF`, the REST cases also run against a server built from commit REF (a `git worktree`
in a temporary directory), alternating with the current one, so the two are compared in one run on the same
machine. The gRPC floor cases (`grpc-floor-aio-b64`, `grpc-floor-sync-b64`) send the same batch-64 calls,
from the same client, to `bench.grpc_floor`: a bare grpcio server (asyncio, as the service runs it, and
thread-pool) that answers with prepared bytes, so their server CPU per call is grpcio's own, under any service
built on it. Prints one JSON object: samples/s and p50/p99 per case, the ratios the protocol work is
held to (v2 JSON b64 / REST JSON b64, gRPC b64 / REST binary b64, REST JSON b1 now / baseline) and the floors'
against REST binary b64, the date and commit.
wrk and perf_analyzer share the machine's cores with the server: compare ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.load import Request, run_wrk
from service.contract import ModelMetadata
from service.core.repository import parse_version
from service.settings import DEFAULT_MODELS_DIR

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 32


def _bodies(model: str, width: int, batch: int, folder: Path) -> dict[str, Request]:
    """The wrk requests of every HTTP case for `batch` rows."""
    x = np.random.default_rng(batch).uniform(0, 16, (batch, width)).astype(np.float32)
    rows = x.round(3)
    cases: dict[str, tuple[str, bytes, dict[str, str]]] = {
        "rest-json": (
            "/encode",
            orjson.dumps({"model": model, "inputs": rows.tolist()}),
            {"Content-Type": "application/json"},
        ),
        "rest-binary": (
            f"/encode?model={model}",
            x.tobytes(),
            {
                "Content-Type": "application/octet-stream",
                "Accept": "application/octet-stream",
                "X-Tensor-Shape": f"{batch},{width}",
            },
        ),
        "v2-json": (
            f"/v2/models/{model}/infer",
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": "x",
                            "datatype": "FP32",
                            "shape": [batch, width],
                            "data": rows.ravel().tolist(),
                        }
                    ],
                    "outputs": [{"name": "latent"}],
                }
            ),
            {"Content-Type": "application/json"},
        ),
    }
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [batch, width],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "latent", "parameters": {"binary_data": True}}],
        }
    )
    cases["v2-binary"] = (
        f"/v2/models/{model}/infer",
        header + x.tobytes(),
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))},
    )
    requests = {}
    for name, (path, body, headers) in cases.items():
        file = folder / f"{name}-b{batch}.body"
        file.write_bytes(body)
        requests[f"{name}-b{batch}"] = Request(path, file, headers)
    return requests


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU the process (and its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cost(pid: int, requests: int, batch: int, cpu: float) -> dict[str, Any]:
    """The server's own CPU per sample: what each protocol costs, whatever the client costs (the clients
    differ and share the cores with the server)."""
    return {
        "server_cpu_us_per_request": round(cpu / max(requests, 1) * 1e6, 1),
        "server_samples_per_cpu_s": round(requests * batch / cpu, 1) if cpu else None,
    }


def _wrk(url: str, request: Request, seconds: int, folder: Path, batch: int, pid: int) -> dict[str, Any]:
    before = _cpu_seconds(pid)
    result = run_wrk(url, request, CONCURRENCY, seconds, folder)
    cpu = _cpu_seconds(pid) - before
    return {
        "samples_per_s": round(result.requests_per_s * batch, 1),
        "requests_per_s": round(result.requests_per_s, 1),
        "p50_ms": round(result.p50_ms, 2),
        "p99_ms": round(result.p99_ms, 2),
        "errors": result.non_2xx + result.socket_errors,
        **_server_cost(pid, result.requests, batch, cpu),
    }


def _baseline_tree(ref: str, folder: Path) -> Path:
    tree = folder / "baseline"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True, capture_output=True
    )
    return tree


def _server(tree: Path, models: Path, grpc: bool) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.live import LiveServer

    if tree == ROOT:
        return LiveServer(models, grpc=grpc, start_timeout=120)
    # The baseline's own code and models, run from its tree (its `python -m service` may predate gRPC).
    server = LiveServer(tree / "models", cwd=tree, start_timeout=120)
    server.command = [c for c in server.command if c not in ("--grpc-port", "0")]
    return server


class _Floor:
    """`bench.grpc_floor` in a subprocess, with what `_grpc` reads of a server (host, grpc_port, process)."""

    def __init__(self, kind: str, latent: int) -> None:
        sys.path.insert(0, str(ROOT))
        from tests.live import free_port

        self.kind, self.latent = kind, latent
        self.host, self.grpc_port = "127.0.0.1", free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Floor:
        import grpc

        command = [sys.executable, "-m", "bench.grpc_floor", "--port", str(self.grpc_port)]
        command += ["--kind", self.kind, "--latent", str(self.latent)]
        self.process = subprocess.Popen(command, cwd=ROOT)
        try:
            with grpc.insecure_channel(f"{self.host}:{self.grpc_port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=60)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def _latent(models: Path, model: str) -> int:
    """The model's code width (its newest version's), which the floor's answers match."""
    versions = [(v, p) for p in (models / model).iterdir() if (v := parse_version(p.name)) is not None]
    return ModelMetadata.read(max(versions)[1]).latent_dim


def _grpc(server: Any, model: str, width: int, batch: int, seconds: int) -> dict[str, Any]:
    """v2 over gRPC, raw contents, `latent` only (what /encode answers), from CONCURRENCY concurrent
    callers of tritonclient's own protocol modules on one channel."""
    import asyncio

    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    x = np.random.default_rng(batch).uniform(0, 16, (batch, width)).astype(np.float32)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[batch, width])
    request.outputs.add(name="latent")
    request.raw_input_contents.append(x.tobytes())
    latencies: list[float] = []
    errors = 0

    async def run() -> None:
        nonlocal errors
        async with grpc.aio.insecure_channel(f"{server.host}:{server.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            until = time.perf_counter() + seconds

            async def caller() -> None:
                nonlocal errors
                while time.perf_counter() < until:
                    started = time.perf_counter()
                    try:
                        await stub.ModelInfer(request)
                    except grpc.aio.AioRpcError:
                        errors += 1
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))

    before = _cpu_seconds(server.process.pid)
    started = time.perf_counter()
    asyncio.run(run())
    elapsed, cpu = time.perf_counter() - started, _cpu_seconds(server.process.pid) - before
    ms = np.asarray(latencies) * 1000
    return {
        "samples_per_s": round(len(latencies) * batch / elapsed, 1),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "errors": errors,
        **_server_cost(server.process.pid, len(latencies), batch, cpu),
    }


def _served(server: Any, model: str) -> int:
    """Requests the model has answered, from the statistics extension."""
    with urllib.request.urlopen(f"{server.url}/v2/models/{model}/stats", timeout=10) as answer:
        stats = json.loads(answer.read())["model_stats"]
    return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)


def _perf_analyzer(server: Any, model: str, seconds: int) -> dict[str, Any]:
    from bench import perf_analyzer

    installation = perf_analyzer.setup()
    found: dict[str, Any] = {}
    for protocol, tensor_format, url in [
        ("http", "binary", f"{server.host}:{server.port}"),
        ("http", "json", f"{server.host}:{server.port}"),
        ("grpc", "binary", f"{server.host}:{server.grpc_port}"),
    ]:
        for batch in (1, 64):
            options = perf_analyzer.RunOptions(
                url=url,
                model=model,
                protocol=protocol,  # type: ignore[arg-type]
                tensor_format=tensor_format,  # type: ignore[arg-type]
                input_data="random",
                batch=batch,
                concurrency=CONCURRENCY,
                measurement_ms=max(1000, seconds * 1000 // 3),
                # Windows within 25% of each other count as stable (perf_analyzer's default, 10%, is seldom
                # met on a machine whose cores the load generator shares).
                extra=("--stability-percentage", "25"),
            )
            before, count = _cpu_seconds(server.process.pid), _served(server, model)
            summary = perf_analyzer.run(options, installation)
            # Every request of the run (its warm-up and all its windows) against the server's CPU over it,
            # counted by the server's own statistics.
            cpu = _cpu_seconds(server.process.pid) - before
            served = _served(server, model) - count
            found[f"pa-{protocol}-{tensor_format}-b{batch}"] = {
                **_server_cost(server.process.pid, served, batch, cpu),
                "samples_per_s": round(summary.samples_per_s, 1),
                "requests_per_s": round(summary.requests_per_s, 1),
                "p50_ms": summary.p50_ms,
                "p99_ms": summary.p99_ms,
                "ok": summary.ok,
                "errors": list(summary.errors),
            }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.protocols", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--model", default="digits-plain")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=10, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every case (the median is reported)")
    parser.add_argument("--baseline", help="a commit to measure the REST cases against, e.g. HEAD~5")
    parser.add_argument(
        "--perf-analyzer", action="store_true", help="also drive the server with perf_analyzer"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ae-bench-protocols-") as tmp:
        folder = Path(tmp)
        requests = {
            **_bodies(args.model, args.width, 1, folder),
            **_bodies(args.model, args.width, 64, folder),
        }
        results: dict[str, Any] = {}
        with _server(ROOT, args.models, grpc=True) as server:
            # Every case once per round, rounds in turn: the machine's drift falls on every case alike, and
            # each case's median over the rounds is what is reported.
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in requests}
            for _ in range(args.rounds):
                for name, request in requests.items():
                    batch = int(name.rsplit("-b", 1)[1])
                    rounds[name].append(
                        _wrk(server.url, request, args.seconds, folder, batch, server.process.pid)
                    )
                for batch in (1, 64):
                    name = f"grpc-raw-b{batch}"
                    rounds.setdefault(name, []).append(
                        _grpc(server, args.model, args.width, batch, args.seconds)
                    )
                for kind in ("aio", "sync"):
                    with _Floor(kind, _latent(args.models, args.model)) as floor:
                        rounds.setdefault(f"grpc-floor-{kind}-b64", []).append(
                            _grpc(floor, args.model, args.width, 64, args.seconds)
                        )
            for name, runs in rounds.items():
                results[name] = sorted(runs, key=lambda r: r["samples_per_s"])[len(runs) // 2]
                results[name]["rounds"] = [r["samples_per_s"] for r in runs]
            if args.perf_analyzer:
                results |= _perf_analyzer(server, args.model, args.seconds)
        if args.baseline:
            tree = _baseline_tree(args.baseline, folder)
            try:
                for round_ in range(args.rounds):  # alternate: drift in the machine's load hits both alike
                    for label, where in [("baseline", tree), ("current", ROOT)]:
                        # Each commit serves its own shipped models: an older service need not read the
                        # current metadata. /encode runs the encoder graph, the same 64-128-16 MLP in both.
                        models = tree / "models" if label == "baseline" else args.models
                        server = _server(where, models, grpc=False)
                        with server:
                            for name in ("rest-json-b1", "rest-json-b64"):
                                key = f"{label}-{name}-{round_}"
                                results[key] = _wrk(
                                    server.url,
                                    requests[name],
                                    args.seconds,
                                    folder,
                                    int(name[-2:].lstrip("b")),
                                    server.process.pid,
                                )
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)

    def served(name: str) -> float:
        return float(results[name]["samples_per_s"])

    def per_cpu(name: str) -> float:
        return float(results[name]["server_samples_per_cpu_s"] or 0.0)

    ratios = {
        "v2_json_b64_over_rest_json_b64": served("v2-json-b64") / served("rest-json-b64"),
        "v2_binary_b64_over_rest_binary_b64": served("v2-binary-b64") / served("rest-binary-b64"),
        "v2_json_b64_over_rest_json_b64_per_server_cpu": per_cpu("v2-json-b64") / per_cpu("rest-json-b64"),
    }
    if args.perf_analyzer:
        grpc, http = "pa-grpc-binary-b64", "pa-http-binary-b64"
        ratios["grpc_b64_over_v2_http_binary_b64_perf_analyzer"] = served(grpc) / max(served(http), 1e-9)
        ratios["perf_analyzer_grpc_b64_over_rest_binary_b64_per_server_cpu"] = per_cpu(grpc) / per_cpu(
            "rest-binary-b64"
        )
    ratios["grpc_raw_b64_over_rest_binary_b64_per_server_cpu"] = per_cpu("grpc-raw-b64") / per_cpu(
        "rest-binary-b64"
    )
    for kind in ("aio", "sync"):
        ratios[f"grpc_floor_{kind}_b64_over_rest_binary_b64_per_server_cpu"] = per_cpu(
            f"grpc-floor-{kind}-b64"
        ) / per_cpu("rest-binary-b64")
    if args.baseline:
        for name in ("rest-json-b1", "rest-json-b64"):
            now = np.median([results[f"current-{name}-{r}"]["samples_per_s"] for r in range(args.rounds)])
            before = np.median([results[f"baseline-{name}-{r}"]["samples_per_s"] for r in range(args.rounds)])
            ratios[f"{name.replace('-', '_')}_now_over_baseline"] = float(now / before)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "baseline": args.baseline,
        "concurrency": CONCURRENCY,
        "seconds": args.seconds,
        "results": results,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
