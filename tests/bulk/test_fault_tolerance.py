"""A worker node dies in the middle of a bulk job: Ray retries its tasks elsewhere and restarts its actors,
and the job still answers every row exactly once, with the same scores."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.cluster_utils import Cluster

from service.bulk import load_model, score_dataset
from tests.bulk.conftest import OBJECT_STORE_BYTES, WORKER_CPUS
from tests.fixtures.make_shaped import SHAPED_MODELS

ROWS = 24_000
BLOCKS = 48
SECONDS_PER_BLOCK = 0.25
"""How long the upstream step takes per block: long enough that the job is still running at the kill."""


def _rows_on_some_node(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """The upstream step of the pipeline: rows for `tiny-named` made from their ids (so any retry makes the
    same rows), tagged with the node that made them."""
    time.sleep(SECONDS_PER_BLOCK)
    ids = batch["id"]
    rng = np.random.default_rng(int(ids[0]))
    node = ray.get_runtime_context().get_node_id()
    return {
        "id": ids,
        "node": np.array([node] * len(ids)),
        **{c: rng.normal(5.0, 2.0, len(ids)) for c in "abcd"},
    }


def test_bulk_job_survives_a_worker_node_killed_mid_job(cluster: Cluster) -> None:
    model = load_model(SHAPED_MODELS, "tiny-named")
    upstream = ray.data.range(ROWS, override_num_blocks=BLOCKS).map_batches(
        _rows_on_some_node, batch_size=None
    )
    scored = score_dataset(upstream, model, keep_columns=["id", "node", "a", "b", "c", "d"], batch_size=250)
    workers = {node.node_id: node for node in cluster.worker_nodes}
    received: list[pa.Table] = []
    killed: str | None = None
    rows_at_kill = 0
    for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
        received.append(batch)
        busy = set(batch.column("node").to_pylist()) & set(workers)  # worker nodes doing the job's work
        if killed is None and len(received) >= 2 and busy:
            killed = busy.pop()
            rows_at_kill = sum(b.num_rows for b in received)
            cluster.remove_node(workers[killed], allow_graceful=False)  # SIGKILL: a crash, not a drain
    try:
        out = pa.concat_tables(received).sort_by("id")
        assert killed is not None and 0 < rows_at_kill < ROWS / 2, "the node died while the job was running"
        assert killed not in {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        ids = out.column("id").to_numpy()
        assert len(ids) == ROWS and np.array_equal(ids, np.arange(ROWS)), "every row exactly once"
        # Rows made again after the kill came from the surviving nodes, and scored the same.
        x = np.stack([out.column(c).to_numpy() for c in "abcd"], axis=1).astype(np.float32)
        np.testing.assert_allclose(out.column("error").to_numpy(), model.score(x).errors, rtol=0, atol=1e-5)
    finally:
        cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=OBJECT_STORE_BYTES)  # for the tests after
        cluster.wait_for_nodes()
