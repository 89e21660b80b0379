"""Overload: a concurrency limit with a bounded queue, fast 503 + Retry-After beyond it, request timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import orjson
import pytest

from service.core.runtime import OnnxModel
from service.ops.admission import AdmissionGate, OverloadedError
from tests.conftest import FIXTURE_MODELS
from tests.live import LiveServer
from tests.reliability.raw_http import GOOD, open_slow_request, read_response


def test_admission_gate_is_fifo_bounded_and_times_out() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_concurrency=1, max_queue=2, queue_timeout_s=0.2)
        await gate.acquire()
        order: list[int] = []

        async def wait(i: int) -> None:
            await gate.acquire()
            order.append(i)

        first, second = asyncio.create_task(wait(1)), asyncio.create_task(wait(2))
        await asyncio.sleep(0)
        assert gate.queued == 2
        with pytest.raises(OverloadedError, match="AE_MAX_QUEUE=2"):
            await gate.acquire()
        gate.release()  # hands the slot to the first waiter
        await first
        assert order == [1] and gate.active == 1
        with pytest.raises(OverloadedError, match="AE_QUEUE_TIMEOUT_S"):
            await second
        assert gate.queued == 0
        gate.release()
        assert gate.active == 0
        assert await gate.drained(0.1)

    asyncio.run(scenario())


def test_admission_gate_drain_waits_for_in_flight() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_concurrency=4, max_queue=0, queue_timeout_s=1)
        await gate.acquire()
        assert not await gate.drained(0.05)
        asyncio.get_running_loop().call_later(0.05, gate.release)
        assert await gate.drained(1)

    asyncio.run(scenario())


def test_overload_sheds_fast_with_retry_after_and_times_out(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Admitted requests hold their slots while the model runs: here a run that waits for a signal, on a
    # worker thread (AE_INLINE_MAX_ROWS=0), so that the event loop stays free to refuse the rest.
    release = threading.Event()
    denoise = OnnxModel.denoise

    def held(self: OnnxModel, x: Any) -> Any:
        release.wait(30)
        return denoise(self, x)

    monkeypatch.setattr(OnnxModel, "denoise", held)
    client = make_client(
        FIXTURE_MODELS,
        max_concurrency=2,
        max_queue=1,
        queue_timeout_s=1.0,
        request_timeout_s=2.0,
        inline_max_rows=0,
        batching=False,
    )
    with ThreadPoolExecutor(4) as pool:
        holders = [pool.submit(client.post, "/denoise", json=GOOD) for _ in range(2)]
        time.sleep(0.3)
        queued = pool.submit(client.post, "/denoise", json=GOOD)
        time.sleep(0.2)
        shed = client.post("/denoise", json=GOOD)
        assert shed.status_code == 503
        assert shed.headers["retry-after"] == "1"
        assert "server overloaded" in shed.json()["detail"] and "AE_MAX_QUEUE=1" in shed.json()["detail"]
        v2 = client.post(
            "/v2/models/tiny/infer",
            json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
        )
        assert v2.status_code == 503 and "server overloaded" in v2.json()["error"]
        # Probes are never queued.
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200

        late = queued.result(10)
        assert late.status_code == 503
        assert "no request slot became free within 1 s" in late.json()["detail"]
        for holder in holders:
            answer = holder.result(10)
            assert answer.status_code == 504
            assert "AE_REQUEST_TIMEOUT_S" in answer.json()["detail"]
    release.set()
    ok = client.post("/denoise", json=GOOD)
    assert ok.status_code == 200
    # Shed requests are counted under the route they were for, not as unmatched.
    metrics = client.get("/metrics").text
    assert 'ae_requests_total{endpoint="/denoise",model="",status="503"}' in metrics
    assert 'ae_requests_total{endpoint="/v2/models/{name}/infer",model="",status="503"}' in metrics
    assert 'endpoint="unmatched"' not in metrics


def test_overload_a_stalled_body_holds_no_slot(server_factory: Any) -> None:
    # Bodies are read before admission: senders that stall hold connections, not request slots.
    server: LiveServer = server_factory(
        FIXTURE_MODELS, max_concurrency="2", max_queue="1", body_timeout_s="2"
    )
    stalled = [open_slow_request(server.port) for _ in range(8)]
    time.sleep(0.3)
    started = time.perf_counter()
    for _ in range(5):
        assert httpx.post(f"{server.url}/denoise", json=GOOD, timeout=5).status_code == 200
    assert time.perf_counter() - started < 2.0
    for sock, _ in stalled:
        status, body = read_response(sock)
        assert status == 408
        assert "did not arrive within" in orjson.loads(body)["detail"]
        sock.close()


def test_admission_gate_timeout_after_release_skipped_the_waiter_answers_overloaded() -> None:
    async def scenario() -> None:
        # A zero timeout fires on the next loop pass; the release queued behind it runs in the same pass,
        # after the wait was cancelled but before the waiting task resumes, and pops the cancelled waiter.
        gate = AdmissionGate(max_concurrency=1, max_queue=1, queue_timeout_s=0)
        await gate.acquire()
        waiting = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        assert gate.queued == 1
        asyncio.get_running_loop().call_soon(gate.release)
        with pytest.raises(OverloadedError, match="AE_QUEUE_TIMEOUT_S"):
            await waiting
        assert gate.queued == 0 and gate.active == 0
        await gate.acquire()  # the slot came back
        assert gate.active == 1

    asyncio.run(scenario())


def test_admission_gate_cancelled_waiter_popped_by_release_leaks_nothing() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_concurrency=1, max_queue=2, queue_timeout_s=5)
        await gate.acquire()
        waiting = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        waiting.cancel()  # the wait is cancelled at once; the task only learns of it on its next step
        gate.release()  # pops the cancelled waiter, finds nobody else: the slot is free
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert gate.queued == 0 and gate.active == 0

    asyncio.run(scenario())


def test_admission_gate_slot_handed_to_a_cancelled_waiter_moves_on() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_concurrency=1, max_queue=2, queue_timeout_s=5)
        await gate.acquire()
        first = asyncio.create_task(gate.acquire())
        second = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # hands the slot to `first`...
        first.cancel()  # ...which is cancelled before it can take it: the slot must go to `second`
        with pytest.raises(asyncio.CancelledError):
            await first
        await second
        assert gate.active == 1 and gate.queued == 0
        gate.release()
        assert gate.active == 0

    asyncio.run(scenario())


def test_admission_a_client_served_less_recently_takes_a_greedy_waiters_place() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_concurrency=1, max_queue=1, queue_timeout_s=5)
        for _ in range(5):  # the greedy client has been served five times just now
            await gate.acquire(client="greedy")
            gate.release()
        await gate.acquire(client="greedy")  # holds the one slot
        greedy = asyncio.create_task(gate.acquire(client="greedy"))
        await asyncio.sleep(0)
        assert gate.queued == 1
        polite = asyncio.create_task(gate.acquire(client="polite"))
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError, match="served less recently took this place"):
            await greedy
        gate.release()
        await polite
        assert gate.active == 1 and gate.queued == 0
        # The greedy client, served most, is refused at once when the queue is full again.
        waiting = asyncio.create_task(gate.acquire(client="polite"))
        await asyncio.sleep(0)
        with pytest.raises(OverloadedError, match="AE_MAX_QUEUE=1"):
            await gate.acquire(client="greedy")
        gate.release()
        await waiting
        gate.release()

    asyncio.run(scenario())


def test_admission_standing_queue_refuses_newcomers_at_once() -> None:
    async def scenario() -> None:
        gate = AdmissionGate(max_concurrency=1, max_queue=100, queue_timeout_s=0.2)
        await gate.acquire(client="a")
        waiting = asyncio.create_task(gate.acquire(client="b"))
        await asyncio.sleep(0.15)  # the oldest waiter has waited over half the queue timeout
        started = time.perf_counter()
        with pytest.raises(OverloadedError, match="the oldest for"):
            await gate.acquire(client="c")
        assert time.perf_counter() - started < 0.05
        gate.release()
        await waiting
        gate.release()

    asyncio.run(scenario())
