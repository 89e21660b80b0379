"""SIGTERM under load: the server stops accepting, answers every request it accepted, and exits 0."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import numpy as np
import orjson

from tests.conftest import FIXTURE_MODELS
from tests.live import LiveServer
from tests.reliability.raw_http import GOOD, open_slow_request, read_response


def test_shutdown_sigterm_under_load_answers_every_accepted_request(server_factory: Any) -> None:
    server: LiveServer = server_factory(FIXTURE_MODELS)
    expected = httpx.post(f"{server.url}/denoise", json=GOOD).json()["outputs"]
    outcomes: dict[str, int] = {"ok": 0, "refused": 0, "closed_before_answer": 0}
    wrong: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                with httpx.Client(base_url=server.url, timeout=10) as c:
                    for _ in range(20):
                        r = c.post("/denoise", json=GOOD)
                        if r.status_code != 200 or not np.allclose(r.json()["outputs"], expected):
                            with lock:
                                wrong.append(f"{r.status_code} {r.text[:200]}")
                        with lock:
                            outcomes["ok"] += 1
            except httpx.ConnectError:
                with lock:
                    outcomes["refused"] += 1  # never accepted: the listening socket is closed
                time.sleep(0.01)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                with lock:
                    # An idle keep-alive connection closed by the shutdown as the next request went out.
                    outcomes["closed_before_answer"] += 1
            except httpx.TimeoutException as exc:
                with lock:
                    wrong.append(f"timeout: {exc!r}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    in_flight = [open_slow_request(server.port) for _ in range(4)]  # accepted, body half sent
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert server.process.poll() is None, "exited with requests still in flight"
    for sock, rest in in_flight:
        sock.sendall(rest)
    answers = [read_response(sock) for sock, _ in in_flight]
    rc = server.process.wait(timeout=15)
    stop.set()
    for t in threads:
        t.join()
    for status, body in answers:
        assert status == 200
        np.testing.assert_allclose(orjson.loads(body)["outputs"], expected, rtol=1e-6)
    assert rc == 0, server.log_text()
    assert not wrong, wrong[:5]
    assert outcomes["ok"] > 20
    try:
        httpx.get(f"{server.url}/healthz", timeout=1)
        raise AssertionError("still accepting connections after SIGTERM")
    except httpx.ConnectError:
        pass
