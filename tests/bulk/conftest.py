"""A real multi-node Ray cluster on this machine (a head and two worker nodes, as Ray's own tests build them),
and the service in process, to hold bulk scoring's answers to.

Each test module gets a cluster of its own, so that the rest of the suite runs without Ray's processes and no
module's jobs (their actors, their shuffles' state) are left in the next one's cluster.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import ray
import ray.data
from fastapi.testclient import TestClient
from ray.cluster_utils import Cluster

from service.app import create_app
from service.settings import Settings
from tests.fixtures.make_shaped import SHAPED_MODELS

WORKER_CPUS = 2
OBJECT_STORE_BYTES = 150 * 1024 * 1024
SERVICE_ROWS = 25_000
"""Rows per request to the service (its AE_MAX_BATCH_ROWS here)."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Head (1 CPU) plus two worker nodes (2 CPUs each), this process connected as the driver."""
    with pytest.MonkeyPatch.context() as env:
        # Ray would otherwise collect usage statistics and try to send them off this machine.
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        head = {"num_cpus": 1, "include_dashboard": False, "object_store_memory": OBJECT_STORE_BYTES}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        for _ in range(2):
            cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=OBJECT_STORE_BYTES)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.raise_original_map_exception = True  # as the CLI has it: a failed row raises its own error
        try:
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


@pytest.fixture(scope="package")
def service() -> Iterator[TestClient]:
    """The service on the shaped fixtures, taking big batches so that 200k rows are a few requests."""
    settings = Settings(
        models_dir=SHAPED_MODELS, max_batch_rows=SERVICE_ROWS, max_json_values=4 * 1024 * 1024
    )
    with TestClient(create_app(settings)) as client:
        yield client


def named_rows(n: int, seed: int, columns: Sequence[str] = ("d", "id", "b", "a", "c")) -> pa.Table:
    """Rows for `tiny-named` (features a..d) with an `id`, columns in `columns`' order; every tenth row is
    pushed far from the training data, so both anomalies and normal rows appear."""
    rng = np.random.default_rng(seed)
    spread = np.where(np.arange(n) % 10 == 0, 6.0, 1.0)
    values = {c: rng.normal(5.0, 1.5, n) * spread - 5.0 * (spread - 1) for c in "abcd"}
    data: dict[str, Any] = {"id": np.arange(n, dtype=np.int64), **values}
    return pa.table({c: data[c] for c in columns})


def service_answer(client: TestClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def service_scores(
    client: TestClient, model: str, records: list[dict[str, Any]], **options: Any
) -> dict[str, np.ndarray]:
    """`/reconstruction-error` on `records` (named rows), SERVICE_ROWS at a time: errors and anomalies."""
    errors, anomalies = [], []
    for start in range(0, len(records), SERVICE_ROWS):
        chunk = records[start : start + SERVICE_ROWS]
        answer = service_answer(
            client, "/reconstruction-error", {"model": model, "records": chunk, **options}
        )
        errors.append(np.asarray(answer["errors"]))
        anomalies.append(np.asarray(answer["anomalies"]))
    return {"errors": np.concatenate(errors), "anomalies": np.concatenate(anomalies)}


def assert_close(actual: Any, expected: Any) -> None:
    """Bulk answers equal the service's to 1e-5 (absolute), compared as the float32 values both computed: the
    service's JSON writes a float32 in its shortest form, which read back as float64 differs in the digits
    after it."""
    want = np.asarray(expected, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float32), want, rtol=1e-6, atol=1e-5)


def assert_answers_as_the_service(out: pa.Table, table: pa.Table, client: TestClient) -> None:
    """`out` (sorted by id) holds the service's `/reconstruction-error` answers to `table`'s rows of
    `tiny-named` (features a..d): its errors to 1e-5 and its anomaly flags exactly."""
    columns = [table.column(c).to_pylist() for c in "abcd"]
    records = [dict(zip("abcd", values, strict=True)) for values in zip(*columns, strict=True)]
    expected = service_scores(client, "tiny-named", records)
    assert_close(out.column("error").to_numpy(), expected["errors"])
    assert out.column("anomaly").to_pylist() == expected["anomalies"].tolist()


def collect(ds: ray.data.Dataset, key: str = "id") -> pa.Table:
    """Every row of `ds`, sorted by `key`."""
    return pa.concat_tables(ray.get(ds.to_arrow_refs())).sort_by(key)
