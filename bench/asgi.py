"""In-process ASGI micro-benchmark: CPU time per request of the service and of the floor app, no sockets.

Calls each app's ASGI callable directly with a prepared scope, `receive` and `send`, many times, and reports
`time.process_time()` per request: deterministic enough on a busy machine to rank changes to the hot path
(wall-clock load tests there move by tens of percent). It leaves out what both apps share (the server's
HTTP parsing and socket work), so `service - floor` is what the service adds. Run:
`python -m bench.asgi [--repo DIR] [--n 4000]`; DIR is a repository built by `bench.models.build_repository`
(made in a temporary directory when not given).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.apps import ANSWERS_ENV, CASE_HEADER, create_floor_app
from bench.models import build_repository, feature_range
from service.app import create_app
from service.settings import Settings

__all__ = ["main"]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _case_request(name: str, x: np.ndarray, body: str) -> tuple[str, bytes, list[tuple[bytes, bytes]], bytes]:
    """(path, query, headers, body) of a /denoise request for rows `x` (batch, input_dim)."""
    case = f"{name}-{body}-b{x.shape[0]}".encode()
    if body == "json":
        payload = orjson.dumps({"model": name, "inputs": x}, option=orjson.OPT_SERIALIZE_NUMPY)
        headers = [(b"content-type", b"application/json")]
        query = b""
    else:
        payload = np.ascontiguousarray(x, dtype="<f4").tobytes()
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"accept", b"application/octet-stream"),
            (b"x-tensor-shape", f"{x.shape[0]},{x.shape[1]}".encode()),
        ]
        query = f"model={name}".encode()
    headers += [
        (b"host", b"127.0.0.1"),
        (b"content-length", str(len(payload)).encode()),
        (CASE_HEADER.lower().encode(), case),
    ]
    return "/denoise", query, headers, payload


class _Caller:
    """Sends one prepared request to an ASGI app and keeps the answer."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], request: tuple[str, bytes, Any, bytes]) -> None:
        path, query, headers, body = request
        self.app = app
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self.state = state
        self.message = {"type": "http.request", "body": body, "more_body": False}
        self.status = 0
        self.answer = b""

    async def __call__(self) -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return self.message

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.answer = bytes(message.get("body", b""))

        # A fresh scope per request, as a server gives (routes write into it).
        await self.app(dict(self.scope, state=dict(self.state)), receive, send)


async def _per_request_cpu_us(caller: _Caller, n: int, concurrency: int, rounds: int = 5) -> float:
    """CPU µs per request: the best of `rounds` rounds of `n / rounds` requests, `concurrency` at a time
    (each wave gathered). The minimum, since other jobs on the machine only ever add time."""
    for _ in range(50):
        await caller()
    if caller.status != 200:
        raise RuntimeError(f"answered {caller.status}: {caller.answer[:300]!r}")
    waves = max(1, n // rounds // concurrency)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(waves):
            if concurrency == 1:
                await caller()
            else:
                await asyncio.gather(*(caller() for _ in range(concurrency)))
        best = min(best, (time.process_time() - start) / (waves * concurrency) * 1e6)
    return best


async def _lifespan_state(app: Any) -> tuple[dict[str, Any], Any]:
    context = app.router.lifespan_context(app)
    state = await context.__aenter__()
    return dict(state or {}), context


async def _measure(repo: Path, n: int, batching: bool, concurrency: int) -> list[tuple[str, float, float]]:
    models = sorted(repo.glob("*/1"))
    cases = []
    for directory in models:
        low, high = feature_range(directory)
        rng = np.random.default_rng(1)
        x = (low + (high - low) * rng.random((64, low.shape[0]))).astype(np.float32)  # (64, input_dim)
        name = directory.parent.name
        for body, batch in (("json", 1), ("json", 64), ("binary", 1), ("binary", 64)):
            cases.append((f"{name} {body} b{batch}", _case_request(name, x[:batch], body)))

    service = create_app(Settings(models_dir=repo, batching=batching))
    service_state, service_context = await _lifespan_state(service)
    # The floor app answers each case with the service's answer, read from this directory.
    answers = Path(tempfile.mkdtemp(prefix="ae-asgi-answers-"))
    try:
        for label, request in cases:
            caller = _Caller(service, service_state, request)
            await caller()
            case = dict(request[2])[CASE_HEADER.lower().encode()].decode()
            (answers / f"{case}.body").write_bytes(caller.answer)
            media = "application/json" if " json " in f" {label} " else "application/octet-stream"
            (answers / f"{case}.type").write_text(media)
        os.environ[ANSWERS_ENV] = str(answers)
        floor = create_floor_app()
        floor_state, floor_context = await _lifespan_state(floor)

        results = []
        gc.collect()
        for label, request in cases:
            count = n // 8 if label.endswith("b64") else n
            service_us = await _per_request_cpu_us(
                _Caller(service, service_state, request), count, concurrency
            )
            floor_us = await _per_request_cpu_us(_Caller(floor, floor_state, request), count, concurrency)
            results.append((label, service_us, floor_us))
        await floor_context.__aexit__(None, None, None)
    finally:
        await service_context.__aexit__(None, None, None)
        shutil.rmtree(answers, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi", description=__doc__)
    parser.add_argument("--repo", type=Path, help="model repository (default: build one in a temp dir)")
    parser.add_argument("--n", type=int, default=4000, help="requests per cell at batch 1 (batch 64: n/8)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--batching", choices=["on", "off"], default="on")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.repo is not None:
        results = asyncio.run(_measure(args.repo, args.n, args.batching == "on", args.concurrency))
    else:
        built = Path(tempfile.mkdtemp(prefix="ae-asgi-"))
        try:
            repo = build_repository(built, "digits-plain")
            results = asyncio.run(_measure(repo, args.n, args.batching == "on", args.concurrency))
        finally:
            shutil.rmtree(built, ignore_errors=True)
    print(f"CPU µs per request (process_time), batching {args.batching}, concurrency {args.concurrency}")
    print(f"{'case':<28} {'service':>9} {'floor':>9} {'added':>9}")
    for label, service_us, floor_us in results:
        print(f"{label:<28} {service_us:9.1f} {floor_us:9.1f} {service_us - floor_us:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
