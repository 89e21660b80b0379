"""Overload: goodput, shedding and accepted latency when far more clients send than one worker can serve.

`python -m bench.overload [--models DIR] [--model NAME] [--batch 256] [--concurrency 256] [--seconds 20]`

Starts `python -m service` (one worker, default settings unless given `--env AE_X=...`), then:
1. capacity: `--unloaded` clients (default 4) in a closed loop for `--seconds`: unloaded goodput and latency;
2. overload: `--concurrency` greedy clients in a closed loop (each sends again as soon as it is answered,
   after the Retry-After when refused, as a polite retrying client does) plus one polite client sending
   10 requests a second, for `--seconds`.
Prints one JSON object: goodput (answers 200 per second) in both phases and their ratio, the share shed
(503 with Retry-After), client timeouts (`--client-timeout`), p50/p99/max latency of accepted requests, and
the polite client's refusals. The clients are asyncio on raw sockets (HTTP/1.1 keep-alive), so that the
load generator costs far less CPU than the server it measures; they share the machine's cores with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.settings import DEFAULT_MODELS_DIR

__all__ = ["main"]


@dataclass
class Tally:
    ok: list[float] = field(default_factory=list)
    """Latency (s) of each 200."""
    shed: int = 0
    timeouts: int = 0
    errors: dict[int, int] = field(default_factory=dict)

    def add(self, status: int, seconds: float) -> None:
        if status == 200:
            self.ok.append(seconds)
        elif status == 503:
            self.shed += 1
        elif status == -1:
            self.timeouts += 1
        else:
            self.errors[status] = self.errors.get(status, 0) + 1

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = np.asarray(self.ok) * 1000
        total = len(self.ok) + self.shed + self.timeouts + sum(self.errors.values())
        return {
            "goodput_per_s": round(len(self.ok) / seconds, 1),
            "answered_200": len(self.ok),
            "shed_503": self.shed,
            "shed_share": round(self.shed / total, 3) if total else 0.0,
            "client_timeouts": self.timeouts,
            "other_errors": self.errors,
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
            "max_ms": round(float(lat.max()), 1) if lat.size else None,
        }


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, timeout: float
) -> tuple[int, float, int]:
    """(status, seconds, retry-after) of one request on a kept-alive connection; status -1 on timeout."""
    started = time.perf_counter()
    writer.write(request)
    try:
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length, retry = 0, 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
                elif name.lower() == b"retry-after":
                    retry = int(value)
            await reader.readexactly(length)
    except TimeoutError:
        return -1, time.perf_counter() - started, 0
    return status, time.perf_counter() - started, retry


async def _client(
    port: int,
    request: bytes,
    until: float,
    tally: Tally,
    timeout: float,
    interval: float | None,
    honour: bool,
) -> None:
    connection = await asyncio.open_connection("127.0.0.1", port)
    while time.perf_counter() < until:
        sent = time.perf_counter()
        try:
            status, seconds, retry = await _request(*connection, request, timeout)
        except (ConnectionError, asyncio.IncompleteReadError):
            status, seconds, retry = 0, 0.0, 0
        tally.add(status, seconds)
        if status in (-1, 0) or connection[0].at_eof():
            connection[1].close()
            connection = await asyncio.open_connection("127.0.0.1", port)
        if interval is not None:
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - sent)))
        elif status == 503 and honour:
            await asyncio.sleep(retry)  # a well-behaved client honours Retry-After
    connection[1].close()


async def _phase(
    port: int, request: bytes, clients: int, seconds: float, timeout: float, polite: bool, honour: bool
) -> tuple[Tally, Tally]:
    until = time.perf_counter() + seconds
    greedy, gentle = Tally(), Tally()
    tasks = [_client(port, request, until, greedy, timeout, None, honour) for _ in range(clients)]
    if polite:
        tasks.append(_client(port, request, until, gentle, timeout, 0.1, True))
    await asyncio.gather(*tasks)
    return greedy, gentle


def _body(model: str, batch: int, width: int) -> bytes:
    rows = np.random.default_rng(0).uniform(0, 16, (batch, width)).round(3).tolist()
    payload = orjson.dumps({"model": model, "inputs": rows})
    head = (
        f"POST /reconstruction-error HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return head + payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overload", description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--model", default="digits-plain")
    parser.add_argument("--width", type=int, default=64, help="the model's input width")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--unloaded", type=int, default=4, help="clients of the capacity phase")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--client-timeout", type=float, default=10.0)
    parser.add_argument("--env", action="append", default=[], help="AE_X=value settings for the server")
    parser.add_argument(
        "--ignore-retry-after", action="store_true", help="greedy clients send again at once after a 503"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.live import LiveServer

    env = dict(item.split("=", 1) for item in args.env)
    request = _body(args.model, args.batch, args.width)
    with LiveServer(args.models, env=env, start_timeout=120) as server:
        honour = not args.ignore_retry_after
        capacity, _ = asyncio.run(
            _phase(server.port, request, args.unloaded, args.seconds, args.client_timeout, False, True)
        )
        greedy, polite = asyncio.run(
            _phase(server.port, request, args.concurrency, args.seconds, args.client_timeout, True, honour)
        )
    unloaded = capacity.summary(args.seconds)
    loaded = greedy.summary(args.seconds)
    total_ok = len(greedy.ok) + len(polite.ok)
    report = {
        "batch": args.batch,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "settings": env,
        "greedy_clients_honour_retry_after": not args.ignore_retry_after,
        "capacity": unloaded,
        "overload": loaded,
        "polite": polite.summary(args.seconds),
        "goodput_ratio": round(total_ok / args.seconds / unloaded["goodput_per_s"], 3)
        if unloaded["goodput_per_s"]
        else None,
        "commit": os.popen("git rev-parse --short HEAD").read().strip(),
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
