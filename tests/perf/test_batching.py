"""Micro-batching: calls coalesce, each caller gets exactly its own rows, limits answer 503 + Retry-After."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.core.batching import (
    BatcherPool,
    BatchLimits,
    BatchQueueFullError,
    BatchTimeoutError,
    MicroBatcher,
    Rows,
)
from service.core.runtime import Float32Array, OnnxModel
from service.errors import InvalidInputError
from service.core.tasks import TASKS, ScoreOptions, _denoise_rows, _encode_rows

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "models"


class Recorder:
    """A row-wise function (x -> 2x, row sums) that records the rows of each run."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.runs: list[int] = []
        self.delay_s = delay_s

    def __call__(self, x: Float32Array) -> Rows:
        self.runs.append(int(x.shape[0]))
        if self.delay_s:
            time.sleep(self.delay_s)
        return x * 2, x.sum(axis=1)


def _rows(n: int, start: float) -> Float32Array:
    return np.arange(start, start + 3 * n, dtype=np.float32).reshape(n, 3)


async def _gather(batcher: MicroBatcher, xs: list[Float32Array]) -> list[Any]:
    return await asyncio.gather(*(batcher.submit(x) for x in xs), return_exceptions=True)


def test_microbatcher_coalesces_concurrent_calls_into_one_run() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_rows=64)
    xs = [_rows(n, 10.0 * i) for i, n in enumerate([1, 3, 1, 2, 5])]
    results = asyncio.run(_gather(batcher, xs))
    assert fn.runs == [12]
    for x, (doubled, sums) in zip(xs, results, strict=True):
        np.testing.assert_array_equal(doubled, x * 2)
        np.testing.assert_array_equal(sums, x.sum(axis=1))


def test_microbatcher_splits_runs_at_max_rows() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_rows=4)
    results = asyncio.run(_gather(batcher, [_rows(1, i) for i in range(10)]))
    assert fn.runs == [4, 4, 2]
    assert [float(r[1][0]) for r in results] == [float(_rows(1, i).sum()) for i in range(10)]


def test_microbatcher_runs_a_call_of_max_rows_alone() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_rows=4)
    results = asyncio.run(_gather(batcher, [_rows(1, 0), _rows(6, 1), _rows(1, 2)]))
    assert sorted(fn.runs) == [2, 6]
    np.testing.assert_array_equal(results[1][0], _rows(6, 1) * 2)


def test_microbatcher_full_queue_refuses_with_retry_after() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, max_rows=64, queue_rows=3, retry_after_s=2)
    results = asyncio.run(_gather(batcher, [_rows(1, i) for i in range(4)]))
    assert fn.runs == [3]
    refused = results[3]
    assert isinstance(refused, BatchQueueFullError)
    assert refused.status_code == 503
    assert refused.headers == {"Retry-After": "2"}
    assert "AE_BATCH_QUEUE_ROWS" in refused.detail
    assert all(isinstance(r, tuple) for r in results[:3])


def test_microbatcher_deadline_expiry_answers_timeout_without_running() -> None:
    # The first run outlasts the late calls' deadlines by a wide margin, even on a stalled machine.
    fn = Recorder(delay_s=1.0)
    # inline_max_rows=0: runs go to a thread, so calls queue behind the slow first run.
    batcher = MicroBatcher(fn, max_rows=2, queue_rows=10, timeout_s=0.05, inline_max_rows=0)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(batcher.submit(_rows(1, 0)))
        await asyncio.sleep(0.05)  # the first run is now busy on its thread
        late = [asyncio.ensure_future(batcher.submit(_rows(1, i))) for i in (1, 2)]
        return [await first, *await asyncio.gather(*late, return_exceptions=True)]

    results = asyncio.run(scenario())
    np.testing.assert_array_equal(results[0][0], _rows(1, 0) * 2)
    for late in results[1:]:
        assert isinstance(late, BatchTimeoutError)
        assert late.status_code == 503
        assert late.headers == {"Retry-After": "1"}
        assert "AE_BATCH_TIMEOUT_S" in late.detail
    assert fn.runs == [1]


def test_microbatcher_error_reaches_every_caller_of_the_run() -> None:
    def failing(x: Float32Array) -> Rows:
        raise InvalidInputError("bad rows")

    batcher = MicroBatcher(failing, max_rows=8)
    results = asyncio.run(_gather(batcher, [_rows(1, i) for i in range(3)]))
    assert all(isinstance(r, InvalidInputError) and r.detail == "bad rows" for r in results)


def test_microbatcher_max_wait_collects_calls_that_arrive_later() -> None:
    fn = Recorder()
    # A wait far longer than the gap between the two calls, so that a stalled machine still coalesces them.
    batcher = MicroBatcher(fn, max_rows=64, max_wait_s=0.5)

    async def scenario() -> list[Any]:
        first = asyncio.ensure_future(batcher.submit(_rows(1, 0)))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.submit(_rows(2, 1)))
        return list(await asyncio.gather(first, second))

    results = asyncio.run(scenario())
    assert fn.runs == [3]
    np.testing.assert_array_equal(results[1][0], _rows(2, 1) * 2)


@pytest.mark.parametrize(
    ("name", "operation", "fn"),
    [
        ("tiny", "denoise", _denoise_rows),
        ("tiny-vae", "encode", _encode_rows),
        ("tiny-vae", "score:neg_elbo:True", "reconstruction_error"),
    ],
)
def test_batcherpool_real_model_results_match_unbatched(name: str, operation: str, fn: Any) -> None:
    model = OnnxModel.load(FIXTURES / name / "1")
    if isinstance(fn, str):  # the task's own row function for these options
        fn = TASKS[fn].plan(model, ScoreOptions(score="neg_elbo", per_feature=True)).fn
    pool = BatcherPool(BatchLimits(max_rows=64))
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(n, model.input_dim)).astype(np.float32) for n in (1, 4, 2, 1, 7)]
    batcher = pool.get(model, operation, fn)
    results = asyncio.run(_gather(batcher, xs))
    assert batcher.runs == 1
    for x, got in zip(xs, results, strict=True):
        want = fn(model, x)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            if w is None:
                assert g is None
            else:
                assert g.shape == w.shape
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_batcherpool_keeps_one_batcher_per_model_and_operation() -> None:
    model = OnnxModel.load(FIXTURES / "tiny" / "1")
    pool = BatcherPool(BatchLimits())
    assert pool.get(model, "denoise", _denoise_rows) is pool.get(model, "denoise", _denoise_rows)
    assert pool.get(model, "encode", _encode_rows) is not pool.get(model, "denoise", _denoise_rows)


ROWS = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [-1.0, 0.5, 2.5, 9.0]]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/denoise", {"model": "tiny", "inputs": ROWS}),
        ("/encode", {"model": "tiny-vae", "inputs": ROWS}),
        ("/decode", {"model": "tiny", "latents": [[0.5, -1.0], [2.0, 0.1]]}),
        ("/reconstruction-error", {"model": "tiny-vae", "inputs": ROWS, "per_feature": True}),
        ("/reconstruction-error", {"model": "tiny-vae", "inputs": ROWS, "score": "neg_elbo"}),
    ],
)
def test_batching_http_answers_equal_unbatched(make_client: Any, path: str, body: dict[str, Any]) -> None:
    plain = make_client(batching=False).post(path, json=body)
    batched_client = make_client(batching=True)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: batched_client.post(path, json=body), range(8)))
    assert plain.status_code == 200
    for answer in answers:
        assert answer.status_code == 200
        got, want = answer.json(), plain.json()
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, list):
                np.testing.assert_allclose(np.asarray(got[key], float), np.asarray(value, float), rtol=1e-6)
            else:
                assert got[key] == value


def test_batching_http_binary_answer_equals_unbatched(make_client: Any) -> None:
    x = np.asarray(ROWS, dtype="<f4")
    headers = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream",
               "X-Tensor-Shape": "3,4"}  # fmt: skip
    plain = make_client(batching=False).post("/denoise?model=tiny", content=x.tobytes(), headers=headers)
    batched = make_client(batching=True).post("/denoise?model=tiny", content=x.tobytes(), headers=headers)
    assert batched.status_code == 200
    assert batched.headers["X-Tensor-Shape"] == "3,4"
    np.testing.assert_allclose(np.frombuffer(batched.content, "<f4"), np.frombuffer(plain.content, "<f4"))


def test_batching_http_queue_over_limit_answers_503_retry_after(make_client: Any) -> None:
    client = make_client(batching=True, batch_queue_rows=2, batch_max_rows=16)
    r = client.post("/denoise", json={"model": "tiny", "inputs": ROWS})
    assert r.status_code == 503
    assert r.headers["Retry-After"].isdigit()
    assert "batching queue is full" in r.json()["detail"]
    assert "AE_BATCH_QUEUE_ROWS" in r.json()["detail"]


def test_batching_http_deadline_expiry_answers_503_retry_after(make_client: Any) -> None:
    client = make_client(batching=True, batch_timeout_s=1e-9)
    r = client.post("/reconstruction-error", json={"model": "tiny", "inputs": ROWS})
    assert r.status_code == 503
    assert r.headers["Retry-After"].isdigit()
    assert "AE_BATCH_TIMEOUT_S" in r.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_batching_http_bad_input_still_422(make_client: Any) -> None:
    client = make_client(batching=True)
    r = client.post("/denoise", json={"model": "tiny", "inputs": [[1.0, 2.0]]})
    assert r.status_code == 422
    assert "4 values" in r.json()["detail"]
