"""Worst-case bodies at once against a real server: peak memory stays under the documented ceiling and the
liveness probe keeps answering within a second (docs/reliability.md, "Memory")."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from typing import Any

import httpx
import numpy as np
import orjson

from service.ops.memory import memory_ceiling_mib
from service.settings import Settings
from tests.conftest import FIXTURE_MODELS
from tests.live import LOOPBACK, LiveServer

BUFFERED = 16 * 1024 * 1024
MAX_BODY = 16 * 1024 * 1024


def _status_mib(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _bodies() -> list[bytes]:
    """List bombs, JSON of numbers over the value limit and just under it (parsed, then refused by shape),
    and valid big batches."""
    bomb = b'{"model": "tiny", "inputs": [' + b"[]," * (MAX_BODY // 3 - 20) + b"[]]}"
    numbers = b'{"model": "tiny", "inputs": [[' + b"1.5," * (MAX_BODY // 4 - 20) + b"1]]}"
    under = Settings().max_json_values - 64
    parsed = b'{"model": "tiny", "inputs": [[' + b"1.5," * under + b"1]]}"
    rows = np.random.default_rng(0).normal(5, 2, (1024, 4)).astype(np.float32)
    valid = orjson.dumps({"model": "tiny", "inputs": rows.tolist()})
    return [bomb] * 8 + [numbers] * 8 + [parsed] * 8 + [valid] * 16


def _huge_header(port: int) -> None:
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (50 * 1024 * 1024) + b"\r\n\r\n")
        sock.recv(1024)


def test_memory_worst_case_bodies_stay_under_the_ceiling_and_probes_answer() -> None:
    env = {"AE_MAX_BUFFERED_BYTES": str(BUFFERED), "AE_MAX_BODY_BYTES": str(MAX_BODY)}
    with LiveServer(FIXTURE_MODELS, env=env) as server:
        pid = server.process.pid
        start = _status_mib(pid, "VmRSS")
        settings = Settings(max_buffered_bytes=BUFFERED, max_body_bytes=MAX_BODY)
        ceiling = start + memory_ceiling_mib(settings)
        # The probe runs in its own process, so that this one's client threads cannot slow it.
        curl = f"curl -s -o /dev/null -w '%{{time_total}} %{{http_code}}\\n' {server.url}/healthz"
        script = f"for i in $(seq 400); do {curl}; sleep 0.02; done"
        probe = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True)
        statuses: list[int] = []

        def send(body: bytes) -> None:
            try:
                r = httpx.post(
                    f"{server.url}/encode",
                    content=body,
                    headers={"content-type": "application/json"},
                    timeout=60,
                )
                statuses.append(r.status_code)
            except httpx.HTTPError:
                statuses.append(0)

        threads: list[threading.Thread] = [threading.Thread(target=send, args=(b,)) for b in _bodies()]
        threads += [threading.Thread(target=_huge_header, args=(server.port,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        time.sleep(0.5)
        probe.terminate()
        lines = [line.split() for line in probe.communicate()[0].split("\n") if line.strip()]
        peak = _status_mib(pid, "VmHWM")
        assert server.process.poll() is None
    assert statuses.count(200) >= 8, statuses  # the valid batches are served
    assert set(statuses) <= {200, 413, 422, 503}, statuses  # the rest refused, never a 5xx but shedding
    assert 413 in statuses and 422 in statuses
    latencies = [float(t) for t, code in lines if code == "200"]
    assert len(latencies) >= 10 and len(latencies) == len(lines), lines[-5:]
    assert max(latencies) < 1.0, max(latencies)
    assert peak < ceiling, f"peak RSS {peak:.0f} MiB over the ceiling {ceiling:.0f} MiB (start {start:.0f})"


def test_memory_ceiling_follows_the_settings(tmp_path: Any) -> None:
    small = memory_ceiling_mib(Settings(max_buffered_bytes=16 * 2**20, max_json_values=2**20))
    big = memory_ceiling_mib(Settings(max_buffered_bytes=64 * 2**20, max_json_values=2**21))
    assert 0 < small < big
