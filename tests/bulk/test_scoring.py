"""Bulk scoring on a real three-node Ray cluster answers what the service answers, row for row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.data
from fastapi.testclient import TestClient
from ray.cluster_utils import Cluster

from service.bulk import BulkInputError, load_model, score_dataset
from service.core.tasks import ScoreOptions
from tests.bulk.conftest import assert_close, collect, named_rows, service_answer, service_scores
from tests.conftest import FIXTURE_MODELS
from tests.fixtures.make_shaped import SHAPED_MODELS

ROWS = 200_000
FILES = 8


def _records(table: pa.Table, names: list[str]) -> list[dict[str, float]]:
    columns = [table.column(n).to_pylist() for n in names]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def test_bulk_200k_rows_each_once_scored_as_the_service_scores(
    cluster: Cluster, service: TestClient, tmp_path: Path
) -> None:
    assert sum(node["Alive"] for node in ray.nodes()) == 3
    table = named_rows(ROWS, seed=3)
    table = table.append_column("region", pa.array([f"r{i % 7}" for i in range(ROWS)]))
    source = tmp_path / "rows"
    source.mkdir()
    step = ROWS // FILES
    for i in range(FILES):
        pq.write_table(table.slice(i * step, step), source / f"part-{i}.parquet")
    model = load_model(SHAPED_MODELS, "tiny-named")

    scored = score_dataset(ray.data.read_parquet(str(source)), model, keep_columns=["id", "region"])
    scored.write_parquet(str(tmp_path / "scores"))
    out = pq.read_table(tmp_path / "scores").sort_by("id")

    assert out.schema.names == ["id", "region", "error", "anomaly"]
    assert (out.schema.field("error").type, out.schema.field("anomaly").type) == (pa.float32(), pa.bool_())
    ids = out.column("id").to_numpy()
    assert len(ids) == ROWS and np.array_equal(ids, np.arange(ROWS)), "every row exactly once"
    assert out.column("region").to_pylist() == [f"r{i % 7}" for i in range(ROWS)]
    expected = service_scores(service, "tiny-named", _records(table, ["a", "b", "c", "d"]))
    assert_close(out.column("error").to_numpy(), expected["errors"])
    anomalies = out.column("anomaly").to_numpy(zero_copy_only=False)
    assert np.array_equal(anomalies, expected["anomalies"])
    assert 0 < anomalies.sum() < ROWS / 2, "the data holds both normal rows and anomalies"


def test_bulk_options_and_per_feature_errors_by_name(cluster: Cluster, service: TestClient) -> None:
    table = named_rows(3000, seed=4)
    model = load_model(SHAPED_MODELS, "tiny-named:1")
    options = ScoreOptions(per_feature=True, false_alarm_rate=0.05)
    scored = score_dataset(
        ray.data.from_arrow(table), model, options=options, keep_columns=["id"], batch_size=700
    )
    out = collect(scored)

    assert out.schema.names == ["id", "error", "anomaly", "error_a", "error_b", "error_c", "error_d"]
    answer = service_answer(
        service,
        "/reconstruction-error",
        {"model": "tiny-named", "records": _records(table, ["a", "b", "c", "d"]), **options.model_dump()},
    )
    assert answer["threshold_source"] == "false_alarm_rate"
    assert_close(out.column("error").to_numpy(), answer["errors"])
    assert out.column("anomaly").to_pylist() == answer["anomalies"]
    for name in "abcd":
        expected = [row[name] for row in answer["feature_errors"]]
        assert_close(out.column(f"error_{name}").to_numpy(), expected)


def _unnamed(n: int) -> pa.Table:
    rng = np.random.default_rng(5)
    columns: dict[str, Any] = {"id": np.arange(n)}
    # Not the model's order of anything: unnamed features are taken in the table's column order.
    for name in ["x3", "x1", "x0", "x2"]:
        columns[name] = rng.uniform(0.0, 16.0, n)
    return pa.table(columns)


def _rows(table: pa.Table, names: list[str]) -> list[list[float]]:
    return np.stack([table.column(n).to_numpy() for n in names], axis=1).tolist()


def test_bulk_unnamed_model_takes_columns_in_order_with_its_other_score(
    cluster: Cluster, make_client: Callable[..., Any]
) -> None:
    table = _unnamed(2000)
    model = load_model(FIXTURE_MODELS, "tiny-vae")
    scored = score_dataset(
        ray.data.from_arrow(table), model, options=ScoreOptions(score="neg_elbo"), keep_columns=["id"]
    )
    out = collect(scored)

    client = make_client(FIXTURE_MODELS, max_batch_rows=5000)
    body = {"model": "tiny-vae", "inputs": _rows(table, ["x3", "x1", "x0", "x2"]), "score": "neg_elbo"}
    answer = service_answer(client, "/reconstruction-error", body)
    assert answer["score"] == "neg_elbo"
    assert_close(out.column("error").to_numpy(), answer["errors"])
    assert out.column("anomaly").to_pylist() == answer["anomalies"]


def test_bulk_encode_gives_latents_and_log_var(cluster: Cluster, make_client: Callable[..., Any]) -> None:
    table = _unnamed(1500)
    model = load_model(FIXTURE_MODELS, "tiny-vae")
    scored = score_dataset(ray.data.from_arrow(table), model, task="encode", keep_columns=["id"])
    out = collect(scored)

    latent = [f"latent_{i}" for i in range(model.latent_dim)]
    log_var = [f"log_var_{i}" for i in range(model.latent_dim)]
    assert out.schema.names == ["id", *latent, *log_var]
    answer = service_answer(
        make_client(FIXTURE_MODELS, max_batch_rows=5000),
        "/encode",
        {"model": "tiny-vae", "inputs": _rows(table, ["x3", "x1", "x0", "x2"])},
    )
    got = np.stack([out.column(c).to_numpy() for c in latent], axis=1)
    assert_close(got, answer["latents"])
    got = np.stack([out.column(c).to_numpy() for c in log_var], axis=1)
    assert_close(got, answer["log_var"])


def test_bulk_denoise_answers_each_feature_by_name(cluster: Cluster, service: TestClient) -> None:
    table = named_rows(1200, seed=6)
    model = load_model(SHAPED_MODELS, "tiny-named")
    scored = score_dataset(ray.data.from_arrow(table), model, task="denoise", keep_columns=["id"])
    out = collect(scored)

    assert out.schema.names == ["id", "a", "b", "c", "d"]
    records = _records(table, ["a", "b", "c", "d"])
    answer = service_answer(service, "/denoise", {"model": "tiny-named", "records": records})
    for name in "abcd":
        expected = [row[name] for row in answer["outputs"]]
        assert_close(out.column(name).to_numpy(), expected)
        assert not np.allclose(out.column(name).to_numpy(), table.column(name).to_numpy()), "a reconstruction"


def test_bulk_failed_row_raises_its_own_error_naming_it(cluster: Cluster) -> None:
    values = named_rows(500, seed=7).to_pydict()
    values["c"][321] = float("nan")
    model = load_model(SHAPED_MODELS, "tiny-named")
    scored = score_dataset(ray.data.from_arrow(pa.table(values)), model, keep_columns=["id"])
    with pytest.raises(BulkInputError) as raised:
        scored.materialize()
    assert "feature 'c' is nan (not finite) in the row with id=321; expected finite numbers" in str(
        raised.value
    )


def test_bulk_refuses_a_single_cpu_cluster_instead_of_waiting_for_ever(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a one-CPU cluster reports (a second Ray on this machine would disturb the cluster the other tests
    # share).
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0})
    model = load_model(SHAPED_MODELS, "tiny-named")
    rows = ray.data.from_arrow(named_rows(10, seed=3))
    with pytest.raises(BulkInputError) as raised:
        score_dataset(rows, model, keep_columns=["id"])
    assert str(raised.value) == (
        "the Ray cluster has 1 CPUs; bulk scoring needs at least 2 (one for the scoring actors, one for "
        "reading and writing)"
    )
