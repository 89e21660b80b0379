"""One framework's server for `bench.frameworks`: started in a session of its own, its answers checked, its
CPU counted over every process it started, and all of them stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import numpy as np

from bench.frameworks_apps import Framework
from bench.load import Request
from tests.live import LOOPBACK, ServerStartError, free_port, wait_ready

__all__ = [
    "TOLERANCE",
    "AppServer",
    "WrongAnswerError",
    "check_answer",
    "compare",
    "tree_cpu_seconds",
    "tree_pids",
    "wait_idle",
]

TOLERANCE = 1e-4
"""The largest absolute difference from ONNX Runtime in-process that counts as the same answer."""
LOG_TAIL_CHARS = 1500
STOP_TIMEOUT_S = 15.0
IDLE_TIMEOUT_S = 30.0


class WrongAnswerError(Exception):
    """The server answered, but not what ONNX Runtime computes for the same rows."""


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name ([0] state, [1] parent, [3] session, [11:15]
    user, system, reaped children's user and system ticks); None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _tree(root: int) -> dict[int, list[str]]:
    """The stat fields of `root` and of every live process it started: its session, and its descendants,
    which may lead sessions of their own (BentoML's workers do)."""
    table = {int(n): fields for n in os.listdir("/proc") if n.isdigit() and (fields := _stat(n)) is not None}
    children: dict[int, list[int]] = {}
    for pid, fields in table.items():
        children.setdefault(int(fields[1]), []).append(pid)
    todo = [root, *(pid for pid, fields in table.items() if int(fields[3]) == root)]
    found: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return {pid: table[pid] for pid in found if pid in table and table[pid][0] != "Z"}


def tree_pids(root: int) -> list[int]:
    """Every live process that `root` started, and `root` itself."""
    return sorted(_tree(root))


def _running(pids: set[int]) -> set[int]:
    """Those of `pids` that still run (zombies do not)."""
    return {pid for pid in pids if (fields := _stat(pid)) is not None and fields[0] != "Z"}


def tree_cpu_seconds(root: int) -> float:
    """User plus system CPU of `root`, every live process it started, and the children those have reaped."""
    ticks = sum(sum(int(f) for f in fields[11:15]) for fields in _tree(root).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_idle(root: int, timeout_s: float = IDLE_TIMEOUT_S) -> None:
    """Wait until `root`'s process tree uses under a tenth of a core: a server still answering what a finished
    wrk left queued (closed connections do not cancel requests) would slow the next run."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(root)
        time.sleep(0.25)
        if tree_cpu_seconds(root) - before < 0.025:
            return


def check_answer(framework: Framework, url: str, request: Request, expected: np.ndarray) -> None:
    """POST the request once; raise WrongAnswerError unless the latents match `expected` within TOLERANCE."""
    post = urllib.request.Request(url + request.path, request.body.read_bytes(), request.headers)
    try:
        with urllib.request.urlopen(post, timeout=30) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        raise WrongAnswerError(f"status {exc.code}: {exc.read()[:300]!r}") from None
    try:
        got = framework.answer(body)
    except (ValueError, KeyError, TypeError) as exc:
        raise WrongAnswerError(f"unreadable answer ({exc!r}): {body[:300]!r}") from None
    compare(got, expected)


def compare(got: np.ndarray, expected: np.ndarray) -> None:
    """Raise WrongAnswerError unless `got` has `expected`'s shape and is within TOLERANCE of it."""
    if got.shape != expected.shape:
        raise WrongAnswerError(f"latents of shape {got.shape}, expected {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not diff <= TOLERANCE:  # also refuses NaN
        raise WrongAnswerError(f"max abs diff {diff:.3g} from ONNX Runtime in-process (allowed {TOLERANCE})")


class AppServer:
    """A framework's app, written into `folder` and run from `bin_dir` on a free loopback port."""

    def __init__(
        self, framework: Framework, folder: Path, model: Path, bin_dir: Path, timeout_s: float
    ) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.launch = framework.write(folder, model, bin_dir, free_port, self.port)
        self.ready_url = self.url + framework.ready_path
        self.timeout_s = timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's own process (the root of its process tree)."""
        if self._process is None:
            raise RuntimeError("the server has not been started")
        return self._process.pid

    def __enter__(self) -> Self:
        self._log = tempfile.TemporaryFile(prefix="ae-bench-framework-")  # closed in __exit__
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **self.launch.env}
        self._process = subprocess.Popen(
            self.launch.argv,
            cwd=self.launch.cwd,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_ready(self.ready_url, timeout=self.timeout_s, process=self._process)
        except ServerStartError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; log: {self._log_tail()}") from None
        return self

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")
        return " | ".join(ln.strip() for ln in text[-LOG_TAIL_CHARS:].splitlines() if ln.strip())

    def stop(self) -> None:
        """SIGTERM to the server, then SIGKILL to what is left of its tree after a grace period (a
        supervisor told first stops its workers; it might restart workers that are signalled first)."""
        if self._process is None:
            return
        # A worker leading a session of its own leaves the tree once its parent exits: remember it now.
        started = set(tree_pids(self.pid))
        self._process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=STOP_TIMEOUT_S)

        def left() -> set[int]:
            return _running(started | set(tree_pids(self.pid)))

        deadline = time.monotonic() + STOP_TIMEOUT_S
        while left() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._process.wait()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._log is not None:
            self._log.close()
