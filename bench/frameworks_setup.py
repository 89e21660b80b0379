"""Create one virtualenv per framework for `bench.frameworks`: `python -m bench.frameworks --setup DIR`.

Each venv gets its framework, the project's own onnxruntime version (so that every server runs the same
kernels) and numpy, and never torch: a constraint that no torch release satisfies makes pip fail rather
than pull it (or its CUDA wheels) in. A framework whose install fails is reported on one line and the rest go
on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib.metadata import version as package_version
from pathlib import Path

__all__ = ["VENV_PACKAGES", "setup_venvs"]

VENV_PACKAGES: dict[str, tuple[str, ...]] = {
    # uvloop 0.22 made get_event_loop() raise where no loop is set, which MLServer 1.7's inference workers
    # call before they start theirs (every parallel_workers >= 1 server exits at start-up).
    "mlserver": ("mlserver==1.7.*", "uvloop<0.22"),
    "kserve": ("kserve==0.21.*",),
    "litserve": ("litserve==0.2.*",),
    "bentoml": ("bentoml==1.4.*",),
}
"""Each venv's framework requirements (the release series the benchmark was written against)."""
NEVER = ("torch", "torchvision", "triton", "tensorflow")
"""Packages a framework venv must not hold: pinned to a version that does not exist."""
PURE_PYTHON_NVIDIA = ("nvidia-ml-py",)
"""NVIDIA's distributions that hold no CUDA libraries (NVML's ctypes bindings; BentoML requires them)."""
INSTALL_TIMEOUT_S = 1800


def _unwanted(name: str) -> bool:
    """torch and its like, or a CUDA wheel (nvidia-cublas-cu12, nvidia-cuda-runtime, ...)."""
    name = name.lower().replace("_", "-")
    return name in NEVER or (name.startswith("nvidia-") and name not in PURE_PYTHON_NVIDIA)


def _pip(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    """pip's most telling line: its last ERROR line, or else its last line."""
    lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:]
    return errors[-1] if errors else f"exit status {done.returncode}, no output"


def _install(venv: Path, packages: tuple[str, ...]) -> str:
    """Create `venv` and install `packages` into it; return what was installed, or raise with one line."""
    python = shutil.which("python3") or sys.executable
    made = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        raise RuntimeError(f"python3 -m venv failed: {_one_line(made)}")
    constraints = venv / "constraints.txt"
    constraints.write_text("".join(f"{name}==0+never\n" for name in NEVER))
    wanted = (*packages, f"onnxruntime=={package_version('onnxruntime')}", "numpy")
    done = _pip(venv, "install", "--quiet", "--constraint", str(constraints), *wanted)
    if done.returncode != 0:
        raise RuntimeError(_one_line(done))
    freeze = _pip(venv, "freeze", "--all").stdout
    (venv / "installed.txt").write_text(freeze)
    pins = dict(ln.split("==", 1) for ln in freeze.splitlines() if "==" in ln)
    unwanted = sorted(n for n in pins if _unwanted(n))
    if unwanted:
        raise RuntimeError(f"installed {', '.join(unwanted)}, which the benchmark must not use")
    key = [re.split(r"[^A-Za-z0-9_.-]", p, maxsplit=1)[0] for p in wanted]
    shown = ", ".join(f"{n} {pins[n]}" for n in key if n in pins)
    return f"{shown} ({len(pins)} packages; all in {venv / 'installed.txt'})"


def setup_venvs(root: Path, only: list[str] | None = None) -> int:
    """Create `root/<framework>` for each framework; return how many failed."""
    root.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name, packages in VENV_PACKAGES.items():
        if only and name not in only:
            continue
        venv = root / name
        print(f"{name}: installing {' '.join(packages)} into {venv} ...", flush=True)
        try:
            print(f"{name}: installed {_install(venv, packages)}", flush=True)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            failed += 1
            print(f"{name}: FAILED: {exc}", flush=True)
    return failed
