"""Drive a server with wrk: a Lua script per case (written into a temporary directory) posts the body and
prints the summary from `done()`, including socket errors and non-2xx answers, as one JSON line."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LoadResult", "Request", "run_wrk", "wrk_path"]

_MARK = "BENCH_RESULT "
_LUA = """\
local f = assert(io.open({body!r}, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class Request:
    """One POST: path (with query), body file and headers."""

    path: str
    body: Path
    headers: dict[str, str]


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    """wrk's status errors: answers with a status above 399."""
    socket_errors: int
    """connect, read, write errors and timeouts."""

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk not found on PATH (Debian/Ubuntu: apt-get install wrk)")
    return path


def run_wrk(
    base_url: str, request: Request, concurrency: int, seconds: int, script_dir: Path, timeout_s: int = 10
) -> LoadResult:
    """Run wrk for `seconds` with `concurrency` connections on one thread and parse its done() line."""
    # Python's repr of a plain str is a valid Lua string literal.
    headers = "\n".join(f"wrk.headers[{k!r}] = {v!r}" for k, v in request.headers.items())
    script = (
        script_dir / f"{request.body.stem}-{abs(hash((request.path, tuple(request.headers.items()))))}.lua"
    )
    script.write_text(_LUA.format(body=str(request.body), headers=headers, mark=_MARK))
    cmd = [
        wrk_path(),
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(script),
        base_url + request.path,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(_MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-500:]} {done.stderr[-500:]}")
    data = json.loads(line.removeprefix(_MARK))
    return LoadResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        non_2xx=data["status"],
        socket_errors=data["connect"] + data["read"] + data["write"] + data["timeout"],
    )
