"""bench.bulk on a tiny backlog: every path runs, is checked against ONNX Runtime, and lands in the table;
a wrong answer (a row lost, twice, or off) is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.bulk import WrongScoresError, check_scores, main

EXPECTED = np.linspace(0.0, 1.0, 6, dtype=np.float32)


@pytest.mark.parametrize(
    ("ids", "got", "message"),
    [
        (np.arange(5), EXPECTED[:5], "5 rows with 5 ids; expected 6 once"),
        (np.array([0, 1, 2, 3, 4, 4]), EXPECTED, "6 rows with 5 ids"),
        (np.arange(6), EXPECTED + np.array([0, 0, 0, 1e-3, 0, 0], np.float32), "row 3 scored"),
    ],
    ids=["lost", "twice", "off"],
)
def test_check_scores_refuses_a_wrong_answer(ids: np.ndarray, got: np.ndarray, message: str) -> None:
    with pytest.raises(WrongScoresError, match=message):
        check_scores(ids, got, EXPECTED)


def test_check_scores_takes_rows_in_any_order() -> None:
    order = np.array([5, 0, 3, 1, 4, 2])
    check_scores(order, EXPECTED[order], EXPECTED)


@pytest.mark.timeout(240)
def test_bench_bulk_runs_every_path_on_a_tiny_backlog(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bulk.json"
    argv = ["--rows", "3000", "--json-rows", "500", "--batch-size", "512", "--http-batch", "256"]
    assert main([*argv, "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    for key in ["ort_rows_per_s_one_core", "loop_rows_per_s", "bulk_rows_per_s", "http_raw_rows_per_s"]:
        assert results[key] > 0, key
    assert results["json_rows"] == 500 and results["http_json_rows_per_s"] > 0
    printed = capsys.readouterr().out
    assert "| path | rows a run | cores | rows/s | rows/s per core | per core / ORT alone |" in printed
    assert printed.startswith(f"python -m bench.bulk {' '.join(argv)} --out {out}")
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert len(table) == 9, printed  # header, rule, seven paths
