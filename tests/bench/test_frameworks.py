"""bench.frameworks without the frameworks: the answer check, the report table, a missing venv, and the
process tree a server leaves behind."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bench.frameworks import _cases, _request, measure
from bench.frameworks_apps import FRAMEWORKS, Framework, Launch
from bench.frameworks_report import markdown_table
from bench.frameworks_server import (
    TOLERANCE,
    AppServer,
    WrongAnswerError,
    check_answer,
    compare,
    tree_cpu_seconds,
    tree_pids,
)

SERVICE = next(f for f in FRAMEWORKS if f.key == "service")
MODEL = Path(__file__).resolve().parents[2] / "models" / "digits-plain" / "1" / "encoder.onnx"
EXPECTED = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)


@pytest.mark.parametrize(
    ("got", "message"),
    [
        (EXPECTED + 10 * TOLERANCE, "max abs diff 0.001 from ONNX Runtime"),
        (np.where(np.arange(32).reshape(2, 16) == 5, np.nan, EXPECTED), "max abs diff nan"),
        (EXPECTED[:1], r"latents of shape \(1, 16\), expected \(2, 16\)"),
        (EXPECTED.T, r"latents of shape \(16, 2\)"),
    ],
    ids=["off-by-1e-3", "nan", "fewer-rows", "transposed"],
)
def test_compare_refuses_a_wrong_answer(got: np.ndarray, message: str) -> None:
    with pytest.raises(WrongAnswerError, match=message):
        compare(got, EXPECTED)


def test_compare_accepts_float_noise_within_the_tolerance() -> None:
    compare(EXPECTED + TOLERANCE / 2, EXPECTED)


def test_markdown_table_aligns_numeric_columns_right_and_escapes_pipes() -> None:
    table = markdown_table(("name", "req/s", "p50 ms"), [("a|b", 12345.6, 1.234), ("c", 99.0, 150.0)])
    assert table.splitlines() == [
        "| name | req/s | p50 ms |",
        "|---|---:|---:|",
        "| a\\|b | 12,346 | 1.23 |",
        "| c | 99.00 | 150 |",
    ]


def test_measure_reports_a_framework_without_a_venv_as_skipped(tmp_path: Path) -> None:
    mlserver = next(f for f in FRAMEWORKS if f.key == "mlserver")
    found = measure([mlserver], tmp_path, seconds=1, rounds=1)
    assert found["mlserver"]["results"] == {}
    assert found["mlserver"]["status"].startswith(f"skipped: no venv at {tmp_path / 'mlserver'}")


def test_service_answers_pass_the_check_and_a_wrong_reading_of_them_fails(tmp_path: Path) -> None:
    off = dataclasses.replace(SERVICE, answer=lambda body: SERVICE.answer(body) + 1e-3)
    with AppServer(SERVICE, tmp_path / "app", MODEL, Path(sys.executable).parent, 120) as server:
        for case in _cases():
            request = _request(SERVICE, case, tmp_path)
            check_answer(SERVICE, server.url, request, case.expected)
            with pytest.raises(WrongAnswerError, match="max abs diff"):
                check_answer(off, server.url, request, case.expected)


_WORKER = """\
import pathlib, time
while time.process_time() < 0.3:
    pass
pathlib.Path("burnt").touch()
time.sleep(120)
"""
_SUPERVISOR = f"""\
import http.server, pathlib, subprocess, sys, time
# A worker in a session of its own (as BentoML starts them) that burns 0.3 s of CPU, then idles.
subprocess.Popen([sys.executable, "-c", {_WORKER!r}], start_new_session=True)
while not pathlib.Path("burnt").exists():
    time.sleep(0.05)
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""


def _write_supervisor(
    folder: Path, model: Path, bin_dir: Path, free_port: Callable[[], int], port: int
) -> Launch:
    folder.mkdir(parents=True)
    return Launch([sys.executable, "-c", _SUPERVISOR, str(port)], folder)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_server_tree_counts_and_stops_a_worker_in_its_own_session(tmp_path: Path) -> None:
    supervisor: Framework = dataclasses.replace(SERVICE, write=_write_supervisor, ready_path="/")
    with AppServer(supervisor, tmp_path / "app", MODEL, Path(sys.executable).parent, 60) as server:
        pids = tree_pids(server.pid)
        assert len(pids) == 2
        assert tree_cpu_seconds(server.pid) >= 0.25
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if _alive(pid)]
