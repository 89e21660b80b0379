"""`python -m service.bulk score`: Parquet or CSV in, Parquet out; a failure is one line, no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from ray.cluster_utils import Cluster

from service.bulk.cli import main
from tests.bulk.conftest import assert_answers_as_the_service, named_rows
from tests.fixtures.make_shaped import SHAPED_MODELS

ROOT = Path(__file__).resolve().parents[2]
RAY_CORE_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d [^]]*\] ", re.M)
"""The shape of the log lines Ray's C++ core writes to stderr."""


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    path = tmp_path / "rows.parquet"
    pq.write_table(named_rows(50, seed=10), path)
    return path


def _argv(source: Path | str, out: Path, *extra: str) -> list[str]:
    return [
        "score",
        *("--model", "tiny-named", "--models", str(SHAPED_MODELS)),
        *("--input", str(source), "--output", str(out), "--keep-columns", "id"),
        *extra,
    ]


def _status(argv: list[str]) -> int | str | None:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own refusals
        return exc.code


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--model", "nope"], "unknown model 'nope'; available models: tiny-image, tiny-named, tiny-series"),
        (["--model", "tiny-named:01"], "--model must be NAME or NAME:VERSION with a positive version"),
        (["--model", "tiny-named:7"], "model 'tiny-named' has no version 7; available versions: 1"),
        (["--models", "{tmp}/nowhere"], "the model repository {tmp}/nowhere is not a folder"),
        (["--input", "{tmp}/missing.parquet"], "the input {tmp}/missing.parquet does not exist"),
        (["--input", "{tmp}/rows.txt"], "cannot tell the format of {tmp}/rows.txt from its name"),
        (["--output", "{tmp}"], "the output {tmp} already exists; give a new folder"),
        (["--task", "encode", "--per-feature"], "--per-feature only apply to --task reconstruction-error"),
        (["--false-alarm-rate", "2"], "Input should be less than 1"),
        (["--task", "sample"], "argument --task: invalid choice: 'sample'"),
        (["--batch-size", "0"], "argument --batch-size: expected at least 1, got 0"),
    ],
)
def test_cli_refuses_bad_options_in_one_line(
    change: list[str], message: str, rows: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "rows.txt").write_text("a,b\n")
    argv = _argv(rows, tmp_path / "out") + [c.format(tmp=tmp_path) for c in change]
    assert _status(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message.format(tmp=tmp_path) in err
    assert not (tmp_path / "out").exists()


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "service.bulk", *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)


def test_cli_scores_a_csv_folder_into_parquet_on_the_cluster(
    cluster: Cluster, service: TestClient, tmp_path: Path
) -> None:
    table = named_rows(3000, seed=11, columns=("id", "c", "a", "d", "b"))
    source = tmp_path / "csv"
    source.mkdir()
    pacsv.write_csv(table.slice(0, 1800), source / "one.csv")
    pacsv.write_csv(table.slice(1800), source / "two.csv")

    done = _cli(*_argv(source, tmp_path / "scores", "--address", cluster.address, "--per-feature"))

    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == (
        f"scored {source} with tiny-named version 1 (reconstruction-error) into {tmp_path / 'scores'}"
    )
    assert "Traceback" not in done.stderr and not RAY_CORE_LOG.search(done.stderr), done.stderr[-3000:]
    out = pq.read_table(tmp_path / "scores").sort_by("id")
    assert out.schema.names == ["id", "error", "anomaly", "error_a", "error_b", "error_c", "error_d"]
    assert np.array_equal(out.column("id").to_numpy(), np.arange(3000))
    assert_answers_as_the_service(out, table, service)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("nan", "error: feature 'b' is nan (not finite) in the row with id=17; expected finite numbers"),
        (
            "column",
            "error: the input has columns 'extra' that are neither the model's nor in --keep-columns; "
            "model tiny-named takes 'a', 'b', 'c', 'd'",
        ),
    ],
)
def test_cli_job_failure_is_one_line_naming_the_row_or_column(
    cluster: Cluster, tmp_path: Path, bad: str, message: str
) -> None:
    table = named_rows(40, seed=12)
    if bad == "nan":
        b = table.column("b").to_numpy().copy()
        b[17] = np.nan
        table = table.set_column(table.schema.get_field_index("b"), "b", pa.array(b))
    else:
        table = table.append_column("extra", pa.array(np.zeros(40)))
    pq.write_table(table, tmp_path / "rows.parquet")

    done = _cli(*_argv(tmp_path / "rows.parquet", tmp_path / "scores", "--address", cluster.address))

    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines() == [message], done.stderr[-3000:]
    assert done.stdout == ""
