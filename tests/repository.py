"""Edits to a writable model repository that the service must notice (a recorded hash that no longer fits)."""

from __future__ import annotations

import json
from pathlib import Path

from service.contract import METADATA_FILE, GraphRole

__all__ = ["set_graph_sha256"]


def set_graph_sha256(version_dir: Path, role: GraphRole, sha256: str) -> None:
    """Record `sha256` as the hash of `role`'s graph in `version_dir`'s metadata, whatever the file holds."""
    path = version_dir / METADATA_FILE
    meta = json.loads(path.read_text())
    meta["graphs"][role]["sha256"] = sha256
    path.write_text(json.dumps(meta))
