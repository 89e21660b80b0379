"""Hot reload: POST /admin/reload and SIGHUP rescan the repository and swap atomically; a version whose new
files fail keeps serving; requests in flight finish on their sessions; every worker reloads."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from service.core.registry import ModelRegistry
from tests.fixtures.make_models import write_model
from tests.live import LiveServer

KEY = "reload-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROWS = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 8.0]]


def _encode(client: Any, version: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "tiny", "inputs": ROWS}
    if version is not None:
        body["version"] = version
    r = client.post("/encode", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def test_reload_reports_added_updated_removed_and_kept(make_client: Any, repo: Path) -> None:
    client = make_client(repo, api_keys=KEY)
    before_v2 = _encode(client, 2)["latents"]
    write_model(repo, "tiny", 3, seed=30)
    shutil.rmtree(repo / "tiny-vae")
    r = client.post("/admin/reload", headers=AUTH)
    assert r.status_code == 200
    report = r.json()
    assert report["added"] == ["tiny/3"]
    assert report["removed"] == ["tiny-vae/1"]
    assert report["unchanged"] == ["tiny/1", "tiny/2"]
    assert report["updated"] == [] and report["kept"] == [] and report["failed"] == []
    assert _encode(client)["version"] == 3
    assert client.post("/sample", json={"model": "tiny-vae", "n": 1}, headers=AUTH).status_code == 404

    # New files for version 2 that do not load: the previous version 2 keeps serving, and the reason shows.
    (repo / "tiny" / "2" / "model.onnx").write_bytes(b"not an onnx file")
    report = client.post("/admin/reload", headers=AUTH).json()
    assert [(k["model"], k["version"]) for k in report["kept"]] == [("tiny", 2)]
    assert "sha256" in report["kept"][0]["error"]
    assert report["updated"] == []
    assert _encode(client, 2)["latents"] == before_v2
    assert client.get("/readyz").status_code == 200

    # Fixed files with different weights: version 2 is updated.
    write_model(repo, "tiny", 2, seed=99)
    report = client.post("/admin/reload", headers=AUTH).json()
    assert report["updated"] == ["tiny/2"] and report["kept"] == []
    assert not np.allclose(_encode(client, 2)["latents"], before_v2)


def test_reload_new_broken_version_is_failed_and_others_serve(make_client: Any, repo: Path) -> None:
    client = make_client(repo, admin_open=True)
    bad = write_model(repo, "tiny", 3, seed=31)
    (bad / "encoder.onnx").write_bytes(b"\0" * 10)
    report = client.post("/admin/reload").json()
    assert [(f["model"], f["version"]) for f in report["failed"]] == [("tiny", 3)]
    assert _encode(client)["version"] == 2
    assert "tiny/3 failed" in client.get("/readyz").json()["detail"]


def test_reload_in_flight_model_keeps_its_sessions(repo: Path) -> None:
    registry = ModelRegistry(repo)
    registry.load()
    held = registry.get("tiny", 2)  # what a request in flight holds
    x = np.asarray(ROWS, dtype=np.float32)
    expected = held.encode(x).latent
    write_model(repo, "tiny", 2, seed=77)
    report = registry.reload()
    assert report.updated == ["tiny/2"]
    assert registry.get("tiny", 2) is not held
    np.testing.assert_array_equal(held.encode(x).latent, expected)
    assert not np.allclose(registry.get("tiny", 2).encode(x).latent, expected)


def _all_workers_serve(url: str, version: int, timeout: float = 20.0) -> bool:
    """Whether 20 answers in a row on fresh connections (spread over the workers) report `version`."""
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline and streak < 20:
        with httpx.Client(base_url=url, headers=AUTH) as fresh:
            got = fresh.post("/encode", json={"model": "tiny", "inputs": ROWS}).json()["version"]
        streak = streak + 1 if got == version else 0
        if streak == 0:
            time.sleep(0.05)
    return streak >= 20


def test_reload_under_load_every_worker_swaps_and_no_request_fails(server_factory: Any, repo: Path) -> None:
    server: LiveServer = server_factory(repo, workers=2, api_keys=KEY)
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal answered
        with httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as c:
            while not stop.is_set():
                try:
                    r = c.post("/encode", json={"model": "tiny", "version": 2, "inputs": ROWS})
                    if r.status_code != 200 or np.asarray(r.json()["latents"]).shape != (2, 2):
                        failures.append(f"{r.status_code} {r.text}")
                    answered += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for seed in (40, 41):  # swap version 2 under load, twice
            write_model(repo, "tiny", 2, seed=seed)
            r = httpx.post(f"{server.url}/admin/reload", headers=AUTH, timeout=30)
            assert r.status_code == 200
            if seed == 40:
                assert r.json()["updated"] == ["tiny/2"]
            else:
                # The previous round's SIGHUP reaches the workers asynchronously: the worker taking this
                # call may already have picked the new files up through it, and then has nothing to update.
                assert set(r.json()["updated"]) <= {"tiny/2"} and not r.json()["failed"]
            assert r.json()["workers_signalled"] is True
        write_model(repo, "tiny", 3, seed=42)
        httpx.post(f"{server.url}/admin/reload", headers=AUTH, timeout=30)
        assert _all_workers_serve(server.url, 3), "a worker did not pick up version 3 after /admin/reload"
        write_model(repo, "tiny", 4, seed=43)
        os.kill(server.process.pid, signal.SIGHUP)
        assert _all_workers_serve(server.url, 4), "a worker did not pick up version 4 after SIGHUP"
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert answered > 50
    assert server.process.poll() is None


def test_reload_sighup_single_worker(server_factory: Any, repo: Path) -> None:
    server: LiveServer = server_factory(repo)
    write_model(repo, "tiny", 3, seed=50)
    os.kill(server.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 15
    while httpx.post(f"{server.url}/encode", json={"model": "tiny", "inputs": ROWS}).json()["version"] != 3:
        assert time.monotonic() < deadline, "SIGHUP did not reload"
        time.sleep(0.1)
    assert server.process.poll() is None
