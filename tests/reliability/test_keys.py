"""API keys fail closed: once a key source is configured, no usable key means every request is refused."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

KEY = "rotating-key-1"
GOOD = {"model": "tiny", "inputs": [[1.0, 2.0, 3.0, 4.0]]}
PROTECTED = [
    ("POST", "/denoise"),
    ("POST", "/v2/models/tiny/infer"),
    ("GET", "/models"),
    ("POST", "/admin/reload"),
]
PROBES = ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"]


def _refuses_everything(client: Any, why: str, headers: dict[str, str] | None = None) -> None:
    for method, path in PROTECTED:
        r = client.request(method, path, json=GOOD, headers=headers or {"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 503, (path, r.text)
        body = r.json()
        assert why in body.get("detail", body.get("error", "")), body
    for path in PROBES:
        assert client.get(path).status_code == 200, path


@pytest.mark.parametrize("content", ["", "# rotated monthly\n# nothing yet\n", "   \n\t\n"])
def test_keys_file_emptied_then_reloaded_refuses_everything(
    make_client: Any, tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{KEY}\n")
    client = make_client(api_keys_file=keys_file)
    assert client.post("/denoise", json=GOOD, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    keys_file.write_text(content)
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200
    assert "hold no key" in r.json()["api_keys_error"]
    assert "hold no key" in caplog.text
    _refuses_everything(client, "hold no key")
    _refuses_everything(client, "hold no key", headers={})  # no key at all: refused the same way


def test_keys_file_fixed_after_emptying_is_read_again(make_client: Any, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("")
    client = make_client(api_keys_file=keys_file)
    _refuses_everything(client, "hold no key")
    time.sleep(1.1)  # the file is looked at again at most once a second
    keys_file.write_text("fixed-key\n")
    r = client.post("/denoise", json=GOOD, headers={"Authorization": "Bearer fixed-key"})
    assert r.status_code == 200
    assert client.post("/denoise", json=GOOD, headers={"Authorization": "Bearer other"}).status_code == 403


def test_keys_file_unreadable_on_reload_refuses_everything(make_client: Any, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"{KEY}\n")
    client = make_client(api_keys_file=keys_file)
    keys_file.unlink()
    r = client.post("/admin/reload", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and "cannot read AE_API_KEYS_FILE" in r.json()["api_keys_error"]
    _refuses_everything(client, "cannot read AE_API_KEYS_FILE")


@pytest.mark.parametrize("keys", [" , ", "", ",,,"])
def test_keys_setting_with_no_key_refuses_everything(make_client: Any, keys: str) -> None:
    _refuses_everything(make_client(api_keys=keys), "hold no key")


def test_keys_empty_file_at_start_refuses_everything(make_client: Any, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# no keys yet\n")
    _refuses_everything(make_client(api_keys_file=keys_file), "AE_API_KEYS_FILE")


def test_keys_fixed_ones_still_work_when_the_file_is_emptied(make_client: Any, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("file-key\n")
    client = make_client(api_keys="fixed-key", api_keys_file=keys_file)
    keys_file.write_text("")
    assert (
        client.post("/admin/reload", headers={"Authorization": "Bearer file-key"}).json()["api_keys_error"]
        is None
    )
    assert (
        client.post("/denoise", json=GOOD, headers={"Authorization": "Bearer fixed-key"}).status_code == 200
    )
    assert client.post("/denoise", json=GOOD, headers={"Authorization": "Bearer file-key"}).status_code == 403


def test_admin_routes_refused_without_keys_unless_opened(make_client: Any) -> None:
    closed = make_client()
    r = closed.post("/admin/reload")
    assert r.status_code == 403 and "AE_ADMIN_OPEN" in r.json()["detail"]
    assert closed.post("/denoise", json=GOOD).status_code == 200  # the rest stays open without keys
    assert make_client(admin_open=True).post("/admin/reload").status_code == 200


def test_grpc_path_needs_a_key_like_every_protected_route(make_client: Any) -> None:
    from service.ops.auth import ApiKeys
    from service.settings import Settings

    keys = ApiKeys(Settings(api_keys=KEY))
    assert keys.refusal("/v2/grpc", []) is not None
    assert keys.refusal("/v2/grpc", [(b"authorization", f"Bearer {KEY}".encode())]) is None
