"""Bulk scoring sits beside the serving path: the service never imports it (nor Ray), and it takes only the
core from the service, none of the web layer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_serving_path_never_imports_bulk_scoring_or_ray() -> None:
    serving = [
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in sorted((ROOT / "service").rglob("*.py"))
        if "bulk" not in path.parts and path.name != "__main__.py"
    ]
    loaded = _modules_after(
        f"for name in {serving!r}:\n    __import__(name)\n"
        "from service.app import create_app\nfrom service.settings import Settings\ncreate_app(Settings())"
    )
    assert "service.protocols.v2_grpc" in loaded and "service.app" in loaded
    assert not {m for m in loaded if m.startswith("service.bulk")}
    assert not {m for m in loaded if m.split(".")[0] in ("ray", "pyarrow", "pandas")}


def test_bulk_scoring_takes_the_core_not_the_web_layer() -> None:
    loaded = _modules_after("import service.bulk.cli, service.bulk")
    assert {"service.core.tasks", "service.core.registry", "service.bulk.scoring"} <= loaded
    web = {
        m for m in loaded if m.split(".")[0] in ("fastapi", "uvicorn", "grpc", "prometheus_client", "torch")
    }
    assert not web, web
    assert not {
        m for m in loaded if m.startswith(("service.app", "service.protocols", "service.ops", "training"))
    }
