"""`--address ray://HOST:PORT`: the CLI as a Ray Client, driving a cluster it is not part of.

The cluster here is its own (a head that runs Ray's client server, and one worker node), and nothing in this
process connects to it: the job's driver is the CLI's process, reaching the cluster only through the client
port, as a laptop reaches a remote cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from ray.cluster_utils import Cluster

from tests.bulk.conftest import OBJECT_STORE_BYTES, WORKER_CPUS, assert_answers_as_the_service, named_rows
from tests.fixtures.make_shaped import SHAPED_MODELS
from tests.live import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client_address() -> Iterator[str]:
    """A head node with Ray's client server on a free port, plus one worker node; its `ray://` address."""
    port = free_port()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_USAGE_STATS_ENABLED", "0")
        head = {
            "num_cpus": 1,
            "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES,
            "ray_client_server_port": port,
        }
        cluster = Cluster(initialize_head=True, head_node_args=head)
        try:
            cluster.add_node(num_cpus=WORKER_CPUS, object_store_memory=OBJECT_STORE_BYTES)
            cluster.wait_for_nodes()
            yield f"ray://127.0.0.1:{port}"
        finally:
            cluster.shutdown()


def test_cli_scores_through_a_ray_client_address(
    client_address: str, service: TestClient, tmp_path: Path
) -> None:
    table = named_rows(2000, seed=21, columns=("b", "id", "a", "d", "c"))
    pq.write_table(table, tmp_path / "rows.parquet")
    argv = [
        "score",
        *("--model", "tiny-named", "--models", str(SHAPED_MODELS)),
        *("--input", str(tmp_path / "rows.parquet"), "--output", str(tmp_path / "scores")),
        *("--keep-columns", "id", "--address", client_address),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "service.bulk", *argv], cwd=ROOT, capture_output=True, text=True, timeout=240
    )

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith(f"scored {tmp_path / 'rows.parquet'} with tiny-named version 1")
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    out = pq.read_table(tmp_path / "scores").sort_by("id")
    assert out.schema.names == ["id", "error", "anomaly"]
    assert np.array_equal(out.column("id").to_numpy(), np.arange(2000))
    assert_answers_as_the_service(out, table, service)


def test_an_unreachable_ray_client_address_is_one_line(tmp_path: Path) -> None:
    pq.write_table(named_rows(10, seed=22), tmp_path / "rows.parquet")
    argv = [
        "score",
        *("--model", "tiny-named", "--models", str(SHAPED_MODELS)),
        *("--input", str(tmp_path / "rows.parquet"), "--output", str(tmp_path / "scores")),
        *("--address", f"ray://127.0.0.1:{free_port()}"),
    ]
    # Ray's client waits this long, then twice and three times as long, before it gives up.
    env = {**os.environ, "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "service.bulk", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )

    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: no Ray Client server answers at {argv[-1]} (ray client connection timeout); expected the "
        "head node's client port, which `ray start --head` opens on 10001 (--ray-client-server-port)"
    ], done.stderr[-3000:]
    assert done.stdout == ""
    assert not (tmp_path / "scores").exists()
