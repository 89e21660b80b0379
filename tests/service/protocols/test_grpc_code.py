"""The committed gRPC modules are what grpc_tools makes of the committed proto (its header says how)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROTO = Path("service/protocols/grpc/inference.proto")


def test_grpc_generated_modules_are_current(tmp_path: Path) -> None:
    (tmp_path / PROTO.parent).mkdir(parents=True)
    shutil.copy(ROOT / PROTO, tmp_path / PROTO)
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        ".",
        "--python_out=.",
        "--pyi_out=.",
        "--grpc_python_out=.",
    ]
    subprocess.run([*command, str(PROTO)], cwd=tmp_path, check=True, capture_output=True)
    for name in ["inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py"]:
        generated = (tmp_path / PROTO.parent / name).read_text()
        committed = (ROOT / PROTO.parent / name).read_text()
        assert generated == committed, f"{name} is stale; regenerate it (see {PROTO}'s header)"
