"""The repository as it is found: odd folder names, unreadable folders, a repository that vanishes. A bad
folder is a reported failure and everything else serves; a transient fault never drops a loaded model."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from service.core.registry import ModelRegistry, parse_version
from tests.fixtures.make_models import write_model
from tests.live import LiveServer

GOOD = {"model": "tiny", "inputs": [[1.0, 2.0, 3.0, 4.0]]}
ODD_NAMES = [
    "\u00b2",
    "\u0661",
    "\uff11",
    "01",
    "-1",
    "1.0",
    " 1",
    "1e3",
]  # superscript two, Arabic-Indic one, full-width one


@pytest.mark.parametrize("text", [*ODD_NAMES, "0", "", "99999999999"])
def test_versions_are_canonical_ascii_integers(text: str) -> None:
    assert parse_version(text) is None


def test_versions_parse_plain_integers() -> None:
    assert [parse_version(t) for t in ["1", "12", "9999999999"]] == [1, 12, 9999999999]


def _odd_repository(root: Path) -> Path:
    """tiny 1 and 2 (good), beside version folders with odd names holding valid metadata, a file where a
    version folder should be, and a version folder without metadata."""
    write_model(root, "tiny", 1)
    write_model(root, "tiny", 2, seed=2)
    for name in ODD_NAMES:
        odd = root / "tiny" / name
        shutil.copytree(root / "tiny" / "1", odd)
    (root / "tiny" / "3").write_text("not a folder")
    (root / "tiny" / "4").mkdir()
    (root / "README.md").write_text("the model repository\n")
    (root / "tiny" / "notes").mkdir()  # no metadata: not a version, ignored
    return root


def test_odd_version_folders_are_failures_and_the_rest_serves(make_client: Any, tmp_path: Path) -> None:
    client = make_client(_odd_repository(tmp_path / "models"))
    models = client.get("/models").json()["models"]
    ready = sorted(m["version"] for m in models if m["status"] == "ready")
    assert ready == [1, 2]  # the Arabic-Indic one and `01` did not replace or double version 1
    failed = {m["error"] for m in models if m["status"] == "failed"}
    for name in ODD_NAMES:
        assert any(f"version folder {name!r} is not a version number" in e for e in failed), name
    assert any("tiny/3 is a file, expected a version folder" in e for e in failed)
    assert any("tiny/4 has no metadata.json" in e for e in failed)
    assert client.post("/denoise", json=GOOD).json()["version"] == 2
    assert client.post("/denoise", json={**GOOD, "version": 1}).status_code == 200


def test_odd_version_folders_added_later_fail_on_reload_and_nothing_else_changes(
    make_client: Any, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    write_model(root, "tiny", 1)
    client = make_client(root, admin_open=True)
    for name in ODD_NAMES:
        shutil.copytree(root / "tiny" / "1", root / "tiny" / name)
    r = client.post("/admin/reload")
    assert r.status_code == 200
    report = r.json()
    assert report["unchanged"] == ["tiny/1"] and not report["added"] and not report["removed"]
    assert len(report["failed"]) == len(ODD_NAMES)
    assert all(f["version"] is None for f in report["failed"])


def test_server_starts_on_a_repository_with_odd_folders(server_factory: Any, tmp_path: Path) -> None:
    root = _odd_repository(tmp_path / "models")
    server: LiveServer = server_factory(root, ready_path="/healthz")
    import httpx

    assert httpx.post(f"{server.url}/denoise", json=GOOD).status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 503


@contextmanager
def _unreadable(path: Path) -> Iterator[None]:
    """`path` cannot be listed or read, even by root: the registry's os.scandir and reads of it fail."""
    real_scandir, real_read = os.scandir, Path.read_bytes
    target = str(path)

    def scandir(p: Any = ".") -> Any:
        if str(p) == target:
            raise PermissionError(13, "Permission denied", target)
        return real_scandir(p)

    def read_bytes(self: Path) -> bytes:
        if str(self).startswith(target + os.sep):
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    patch = pytest.MonkeyPatch()
    patch.setattr(os, "scandir", scandir)
    patch.setattr(Path, "read_bytes", read_bytes)
    try:
        yield
    finally:
        patch.undo()


@pytest.mark.parametrize("which", ["repository", "model", "version"])
def test_unreadable_folder_on_reload_keeps_what_is_loaded(tmp_path: Path, which: str) -> None:
    root = tmp_path / "models"
    write_model(root, "tiny", 1)
    write_model(root, "other", 1, seed=3)
    registry = ModelRegistry(root)
    registry.load()
    folder = {"repository": root, "model": root / "tiny", "version": root / "tiny" / "1"}[which]
    with _unreadable(folder):
        report = registry.reload()
    assert not report.removed, report
    assert registry.get("tiny").metadata.version == 1
    assert registry.get("other").metadata.version == 1
    if which == "repository":
        assert report.fault is not None and "cannot read the model repository" in report.fault
    if which == "version":
        assert [f.label for f in report.kept] == ["tiny/1"]
        assert "Permission denied" in report.kept[0].error


def test_unreadable_version_at_start_is_a_reported_failure(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_model(root, "tiny", 1)
    write_model(root, "tiny", 2, seed=2)
    with _unreadable(root / "tiny" / "2"):
        snapshot = ModelRegistry(root).load()
    assert snapshot.versions("tiny") == [1]
    assert "cannot read tiny/2" in snapshot.failures[0].error


@pytest.mark.parametrize("fault", ["renamed", "emptied"])
def test_repository_gone_at_reload_keeps_serving_and_says_so(
    make_client: Any, tmp_path: Path, fault: str
) -> None:
    root = tmp_path / "models"
    write_model(root, "tiny", 1)
    client = make_client(root, admin_open=True)
    if fault == "renamed":
        root.rename(tmp_path / "away")
    else:
        shutil.rmtree(root / "tiny")
    report = client.post("/admin/reload").json()
    assert report["removed"] == [] and report["unchanged"] == ["tiny/1"]
    assert report["repository_error"]
    assert client.post("/denoise", json=GOOD).status_code == 200
    assert client.get("/readyz").status_code == 503  # the fault is visible to the probes


def test_removing_one_model_from_a_readable_repository_removes_it(make_client: Any, tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_model(root, "tiny", 1)
    write_model(root, "other", 1, seed=3)
    client = make_client(root, admin_open=True)
    shutil.rmtree(root / "other")
    report = client.post("/admin/reload").json()
    assert report["removed"] == ["other/1"] and report["repository_error"] is None
    assert client.post("/denoise", json={**GOOD, "model": "other"}).status_code == 404


@pytest.mark.parametrize("layout", ["model", "version"])
def test_single_model_and_single_version_layouts_load(make_client: Any, tmp_path: Path, layout: str) -> None:
    source = tmp_path / "repo"
    write_model(source, "tiny", 1)
    write_model(source, "tiny", 2, seed=2)
    root = source / "tiny" if layout == "model" else source / "tiny" / "2"
    client = make_client(root)
    versions = sorted(m["version"] for m in client.get("/models").json()["models"] if m["status"] == "ready")
    assert versions == ([1, 2] if layout == "model" else [2])
    assert client.post("/denoise", json=GOOD).json()["version"] == 2
