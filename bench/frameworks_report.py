"""What `bench.frameworks` reports besides its figures (machine, versions) and how it prints them."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from bench.frameworks_apps import Framework

__all__ = ["machine", "markdown_report", "markdown_table", "versions"]

COMMON = ("onnxruntime", "numpy", "pydantic", "uvloop", "httptools")
"""Distributions reported for every framework besides its own (uvicorn runs on uvloop and httptools only
where they are installed: not every framework requires them)."""
_VERSIONS = """\
import json, platform, sys
from importlib.metadata import PackageNotFoundError, version
def found(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None
print(json.dumps({"python": platform.python_version(), **{n: found(n) for n in sys.argv[1:]}}))
"""


def machine() -> dict[str, Any]:
    """CPUs, their model, and wrk's version."""
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "wrk": wrk.split(" Copyright")[0].strip() if wrk else None,
    }


def versions(framework: Framework, venvs: Path) -> dict[str, str | None]:
    """Python's and each reported distribution's version where the framework runs (its venv, or here)."""
    names = (*framework.packages, *COMMON)
    if framework.venv is None:

        def found(name: str) -> str | None:
            try:
                return package_version(name)
            except PackageNotFoundError:
                return None

        return {"python": platform.python_version(), **{n: found(n) for n in names}}
    python = venvs / framework.venv / "bin" / "python"
    if not python.exists():
        return {}
    done = subprocess.run(
        [str(python), "-c", _VERSIONS, *names], capture_output=True, text=True, timeout=120, check=False
    )
    return dict(json.loads(done.stdout)) if done.returncode == 0 else {"error": done.stderr.strip()[-300:]}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; numbers right-aligned, floats with thousands separators as fits their size."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
        return str(value).replace("|", "\\|")

    numeric = [bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]
    return "\n".join(lines)


def _results_table(frameworks: dict[str, Any]) -> str:
    header = (
        "framework",
        "batch",
        "req/s",
        "samples/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "server CPU µs/req",
        "processes",
        "req/s per round",
    )
    rows = []
    for entry in frameworks.values():
        for batch, r in entry["results"].items():
            rounds = ", ".join(f"{v:,.0f}" for v in r["rounds_requests_per_s"])
            rows.append(
                (
                    entry["label"],
                    int(batch),
                    r["requests_per_s"],
                    r["samples_per_s"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["errors"],
                    r["server_cpu_us_per_request"],
                    int(r["server_processes"]),
                    rounds,
                )
            )
    return markdown_table(header, rows)


def markdown_report(report: dict[str, Any]) -> str:
    """The whole report: setting, figures, frameworks not timed and why, versions, batching defaults."""
    m, s, frameworks = report["machine"], report["settings"], report["frameworks"]
    names = sorted({n for f in frameworks.values() for n in f["versions"]} - {"python", "error"})
    version_rows = [
        (f["label"], f["versions"].get("python", "-"), *(f["versions"].get(n) or "-" for n in names))
        for f in frameworks.values()
    ]
    not_timed = [f"- {f['label']}: {f['status']}" for f in frameworks.values() if f["status"] != "ok"]
    setting = (
        f"{report['date']}, commit {report['commit']}. Machine: {m['nproc']} CPUs ({m['cpu']}), load average "
        f"before/after {_load(m['load_average_before'])} / {_load(m['load_average_after'])}. {m['wrk']}, "
        f"{s['wrk_threads']} thread, {s['concurrency']} connections, JSON bodies; {s['seconds']} s per batch "
        f"size after {s['warmup_s']} s warm-up; median of {s['rounds']} interleaved round(s); the run took "
        f"{s['took_s']} s. Each server: one worker process, one model replica, one ONNX Runtime intra-op and "
        "inter-op thread, no access log; its CPU is that of every process it started."
    )
    sections = [
        f"# {s['model']} served by each framework",
        setting,
        _results_table(frameworks),
        "Not timed:\n\n" + ("\n".join(not_timed) if not_timed else "- none"),
        "Versions:\n\n" + markdown_table(("framework", "python", *names), version_rows),
        "Batching (as each framework has it by default):\n\n"
        + "\n".join(f"- {f['label']}: {f['batching']}" for f in frameworks.values()),
    ]
    return "\n\n".join(sections) + "\n"


def _load(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)
