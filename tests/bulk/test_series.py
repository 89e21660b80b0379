"""A series model is scored per series key: each series sorted by time, cut into windows, answered per step,
exactly as the service answers that one series."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import ray.data
from fastapi.testclient import TestClient
from ray.cluster_utils import Cluster

from service.bulk import BulkInputError, load_model, score_dataset
from service.core.tasks import ScoreOptions
from tests.bulk.conftest import assert_close, collect, service_answer
from tests.fixtures.make_shaped import SHAPED_MODELS

LENGTHS = {"s0": 40, "s1": 75, "s2": 4, "s3": 130, "s4": 61}
"""Steps per series; s2 is exactly one window long."""


def _series_table(lengths: dict[str, int], seed: int = 8) -> pa.Table:
    """Rows of several series, shuffled, each with its own irregular integer times and a reading id."""
    rng = np.random.default_rng(seed)
    parts = []
    for key, steps in lengths.items():
        times = np.cumsum(rng.integers(1, 5, steps)) + 1000
        level = 10.0 + rng.normal(0.0, 0.6, (steps, 2)).cumsum(
            axis=0
        )  # a random walk around the training level
        parts.append({"sensor": [key] * steps, "t": times, "flow": level[:, 0], "temp": level[:, 1]})
    columns = {c: np.concatenate([p[c] for p in parts]) for c in ["sensor", "t", "flow", "temp"]}
    order = rng.permutation(len(columns["t"]))
    table = pa.table({c: np.asarray(v)[order] for c, v in columns.items()})
    return table.append_column("reading", pa.array(np.arange(table.num_rows) * 3))


def _one_series(table: pa.Table, key: str) -> pa.Table:
    mask = np.asarray(table.column("sensor").to_pylist()) == key
    return table.filter(pa.array(mask)).sort_by("t")


def _records(series: pa.Table) -> list[dict[str, Any]]:
    return [
        {"t": t, "flow": f, "temp": c}
        for t, f, c in zip(*(series.column(n).to_pylist() for n in ["t", "flow", "temp"]), strict=True)
    ]


def test_bulk_series_per_key_equals_the_service_per_series(cluster: Cluster, service: TestClient) -> None:
    table = _series_table(LENGTHS)
    model = load_model(SHAPED_MODELS, "tiny-series")
    options = ScoreOptions(per_feature=True)
    scored = score_dataset(
        ray.data.from_arrow(table).repartition(3),
        model,
        options=options,
        series_key="sensor",
        keep_columns=["reading"],
    )
    out = collect(scored, "reading")

    assert out.schema.names == ["sensor", "t", "reading", "error", "anomaly", "error_flow", "error_temp"]
    assert out.num_rows == table.num_rows
    assert sorted(out.column("reading").to_pylist()) == sorted(table.column("reading").to_pylist())
    flagged = 0
    for key in LENGTHS:
        got, sent = _one_series(out, key), _one_series(table, key)
        assert got.column("reading").to_pylist() == sent.column("reading").to_pylist(), "rows kept as sent"
        answer = service_answer(
            service,
            "/reconstruction-error",
            {"model": "tiny-series", "records": _records(sent), "per_feature": True},
        )
        assert_close(got.column("error").to_numpy(), answer["errors"])
        assert got.column("anomaly").to_pylist() == answer["anomalies"]
        for channel in ["flow", "temp"]:
            expected = [step[channel] for step in answer["feature_errors"]]
            assert_close(got.column(f"error_{channel}").to_numpy(), expected)
        flagged += sum(answer["anomalies"])
    assert flagged > 0, "some steps are anomalies, so the threshold was applied"


def test_bulk_series_denoise_gives_each_step_reconstructed(cluster: Cluster, service: TestClient) -> None:
    table = _series_table({"a": 12, "b": 9}, seed=9)
    model = load_model(SHAPED_MODELS, "tiny-series")
    scored = score_dataset(
        ray.data.from_arrow(table), model, task="denoise", series_key="sensor", keep_columns=["reading"]
    )
    out = collect(scored, "reading")

    assert out.schema.names == ["sensor", "t", "reading", "flow", "temp"]
    for key in ["a", "b"]:
        got, sent = _one_series(out, key), _one_series(table, key)
        answer = service_answer(service, "/denoise", {"model": "tiny-series", "records": _records(sent)})
        for channel in ["flow", "temp"]:
            expected = [step[channel] for step in answer["outputs"]]
            assert_close(got.column(channel).to_numpy(), expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("short", "series sensor='s2' has 3 steps; model tiny-series needs at least its window of 4"),
        ("repeat", "series sensor='s0' has two steps at t="),
    ],
)
def test_bulk_series_refuses_a_bad_series_naming_it(cluster: Cluster, change: str, message: str) -> None:
    table = _series_table({"s0": 10, "s2": 3 if change == "short" else 6})
    if change == "repeat":
        times = table.column("t").to_numpy().copy()
        first = np.flatnonzero(np.asarray(table.column("sensor").to_pylist()) == "s0")[:2]
        times[first[1]] = times[first[0]]
        table = table.set_column(table.schema.get_field_index("t"), "t", pa.array(times))
    model = load_model(SHAPED_MODELS, "tiny-series")
    scored = score_dataset(ray.data.from_arrow(table), model, series_key="sensor", keep_columns=["reading"])
    with pytest.raises(BulkInputError) as raised:
        scored.materialize()
    assert message in str(raised.value)
