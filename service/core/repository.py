"""The model repository as it is found on disk: which folders hold model versions, in which layout.

Layouts (all read the same way, so a KServe storage initializer's `/mnt/models` works whatever it holds):
- a repository: `<root>/<name>/<version>/metadata.json` (Triton's layout);
- one model: `<root>/<version>/metadata.json`, named by its metadata;
- one version: `<root>/metadata.json`, named and numbered by its metadata.

Versions are canonical positive integers in ASCII (`1`, `12`; not `01`, `1.0`, or digits of other
scripts): any other folder holding a metadata.json, or a version folder without one, is a `Candidate` with a
problem (reported as a failed version); files and hidden folders at the top are ignored. A folder that cannot
be listed is noted (`Scan.unreadable_models`, `Scan.fault`) so that what it held is kept, not dropped.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from service.contract import METADATA_FILE, ModelMetadata

__all__ = [
    "VERSION_PATTERN",
    "Candidate",
    "Scan",
    "parse_version",
    "read_metadata_quietly",
    "relative",
    "scan",
]

logger = logging.getLogger(__name__)

VERSION_PATTERN = re.compile(r"[1-9][0-9]{0,9}")
"""A version as written in paths and URLs: ASCII digits, no leading zero."""


def parse_version(text: str) -> int | None:
    """The version `text` names, or None when it is not a canonical positive ASCII integer."""
    return int(text) if VERSION_PATTERN.fullmatch(text) else None


@dataclass(frozen=True)
class Candidate:
    """A folder that holds, or should hold, one model version."""

    name: str
    version: int | None
    directory: Path
    problem: str | None = None
    """Why it cannot be loaded before even trying (a bad folder name, an unreadable folder)."""


@dataclass
class Scan:
    candidates: list[Candidate] = field(default_factory=list)
    unreadable_models: set[str] = field(default_factory=set)
    """Model folders whose listing failed: their loaded versions stay."""
    fault: str | None = None


def scan(root: Path) -> Scan:
    """What the repository at `root` holds, in whichever layout (see the module docstring)."""
    scan = Scan()
    try:
        entries = _list_dirs(root)
        if (root / METADATA_FILE).is_file():
            meta = read_metadata_quietly(root)
            if meta is None:
                scan.candidates.append(Candidate(root.name, None, root, f"invalid {METADATA_FILE}"))
            else:
                scan.candidates.append(Candidate(meta.name, meta.version, root))
            return scan
    except OSError as exc:
        scan.fault = f"cannot read the model repository: {exc.strerror or exc}"
        return scan
    if entries and all(parse_version(e.name) is not None for e in entries):
        meta = next((m for e in entries if (m := read_metadata_quietly(e)) is not None), None)
        if meta is not None:  # one model's version folders, straight under the root
            scan.candidates += _versions(root, meta.name, root, scan)
            return scan
    for model_dir in entries:
        scan.candidates += _versions(root, model_dir.name, model_dir, scan)
    return scan


def _versions(root: Path, name: str, model_dir: Path, scan: Scan) -> list[Candidate]:
    try:
        entries = _list_dirs(model_dir, include_files=True)
    except OSError as exc:
        logger.error("cannot read model folder %s: %s", relative(root, model_dir), exc.strerror or exc)
        scan.unreadable_models.add(name)
        return []
    found = []
    for entry in entries:
        version = parse_version(entry.name)
        is_dir = entry.is_dir()
        if version is not None and not is_dir:
            where = relative(root, entry)
            found.append(Candidate(name, version, entry, f"{where} is a file, expected a version folder"))
        elif version is None and is_dir and (entry / METADATA_FILE).is_file():
            found.append(
                Candidate(
                    name,
                    None,
                    entry,
                    f"version folder {entry.name!r} is not a version number (expected ASCII digits "
                    "without a leading zero, e.g. 1 or 12)",
                )
            )
        elif version is not None:
            found.append(Candidate(name, version, entry))
    return found


def relative(root: Path, path: Path) -> str:
    """`path` relative to the repository root (what messages name, never the absolute path)."""
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return path.name


def _list_dirs(directory: Path, include_files: bool = False) -> list[Path]:
    """The entries of `directory` (sorted, hidden ones skipped), folders only unless `include_files`."""
    found = []
    for entry in os.scandir(directory):
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = True
        if is_dir or include_files:
            found.append(Path(entry.path))
    return sorted(found)


def read_metadata_quietly(directory: Path) -> ModelMetadata | None:
    try:
        return ModelMetadata.read(directory)
    except Exception:  # pydantic ValidationError, OSError, JSON errors: reported by the load itself
        return None
