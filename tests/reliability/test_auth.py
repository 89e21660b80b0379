"""API keys, public paths, CORS and the OpenAPI security scheme."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from service.ops.auth import ApiKeys
from service.settings import Settings

KEY = "s3cret-key-one"
OTHER = "second-key"
GOOD = {"model": "tiny", "inputs": [[1.0, 2.0, 3.0, 4.0]]}
V2_GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}


@pytest.fixture
def secured(make_client: Any) -> Any:
    return make_client(api_keys=f"{KEY}, {OTHER}")


def test_auth_missing_key_is_401_with_challenge(secured: Any) -> None:
    r = secured.post("/denoise", json=GOOD)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "missing API key" in r.json()["detail"]


def test_auth_wrong_key_is_403(secured: Any) -> None:
    r = secured.post("/denoise", json=GOOD, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 403
    assert r.json()["detail"] == "the API key is not valid"


def test_auth_non_bearer_scheme_is_401(secured: Any) -> None:
    r = secured.post("/denoise", json=GOOD, headers={"Authorization": f"Basic {KEY}"})
    assert r.status_code == 401
    assert "Bearer <key>" in r.json()["detail"]


@pytest.mark.parametrize("key", [KEY, OTHER])
def test_auth_any_configured_key_is_accepted(secured: Any, key: str) -> None:
    r = secured.post("/denoise", json=GOOD, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200


def test_auth_v2_refusal_uses_protocol_error_shape(secured: Any) -> None:
    r = secured.post("/v2/models/tiny/infer", json=V2_GOOD)
    assert r.status_code == 401
    assert "missing API key" in r.json()["error"]
    ok = secured.post("/v2/models/tiny/infer", json=V2_GOOD, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/openapi.json"]
)
def test_auth_probes_and_docs_are_open(secured: Any, path: str) -> None:
    assert secured.get(path).status_code == 200


def test_auth_ui_page_is_open(secured: Any) -> None:
    r = secured.get("/", follow_redirects=True)
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/metrics"), ("POST", "/admin/reload"), ("GET", "/models"), ("GET", "/info")]
)
def test_auth_metrics_admin_and_models_need_key(secured: Any, method: str, path: str) -> None:
    assert secured.request(method, path).status_code == 401
    assert secured.request(method, path, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_auth_public_metrics_setting_opens_metrics_only(make_client: Any) -> None:
    client = make_client(api_keys=KEY, public_metrics=True)
    assert client.get("/metrics").status_code == 200
    assert client.post("/admin/reload").status_code == 401


def test_auth_without_keys_everything_is_open(client: Any) -> None:
    assert client.post("/denoise", json=GOOD).status_code == 200
    assert client.get("/metrics").status_code == 200


def test_auth_keys_file_is_read_and_rotated_on_reload(make_client: Any, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated monthly\n\nfirst-key\n")
    client = make_client(api_keys_file=keys_file)
    assert (
        client.post("/denoise", json=GOOD, headers={"Authorization": "Bearer first-key"}).status_code == 200
    )
    keys_file.write_text("second-key\n")
    r = client.post("/admin/reload", headers={"Authorization": "Bearer first-key"})
    assert r.status_code == 200
    assert r.json()["api_keys_error"] is None
    assert (
        client.post("/denoise", json=GOOD, headers={"Authorization": "Bearer first-key"}).status_code == 403
    )
    assert (
        client.post("/denoise", json=GOOD, headers={"Authorization": "Bearer second-key"}).status_code == 200
    )


def test_auth_missing_keys_file_fails_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="cannot read AE_API_KEYS_FILE"):
        ApiKeys(Settings(api_keys_file=tmp_path / "absent"))


def test_auth_keys_never_logged_or_shown(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(api_keys=KEY)
    client.post("/denoise", json=GOOD, headers={"Authorization": "Bearer wrong-guess"})
    client.post("/denoise", json=GOOD, headers={"Authorization": f"Bearer {KEY}"})
    info = client.get("/info", headers={"Authorization": f"Bearer {KEY}"}).text
    assert KEY not in caplog.text and "wrong-guess" not in caplog.text
    assert KEY not in info
    assert KEY not in repr(Settings(api_keys=KEY))


def test_auth_checks_every_key_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)
    keys = ApiKeys(Settings(api_keys="a-key,b-key,c-key"))
    assert keys.check(b"a-key")
    assert len(calls) == 3  # no early exit on the first match


def test_auth_cors_off_by_default(client: Any) -> None:
    r = client.options(
        "/denoise", headers={"Origin": "https://example.org", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers


def test_auth_cors_preflight_needs_no_key(make_client: Any) -> None:
    client = make_client(api_keys=KEY, cors_origins="https://example.org")
    r = client.options(
        "/denoise",
        headers={
            "Origin": "https://example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://example.org"
    refused = client.post("/denoise", json=GOOD, headers={"Origin": "https://example.org"})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == "https://example.org"
    other = client.options(
        "/denoise", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in other.headers


def test_auth_openapi_documents_bearer_on_protected_routes(client: Any) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    paths = schema["paths"]
    assert paths["/encode"]["post"]["security"] == [{"bearerAuth": []}]
    assert paths["/admin/reload"]["post"]["security"] == [{"bearerAuth": []}]
    assert "security" not in paths["/healthz"]["get"]
    assert "security" not in paths["/v2/health/ready"]["get"]


def test_auth_committed_openapi_schema_is_current(client: Any) -> None:
    import json

    committed = json.loads((Path(__file__).resolve().parents[2] / "service" / "openapi.json").read_text())
    assert (
        committed["components"]["securitySchemes"]
        == client.get("/openapi.json").json()["components"]["securitySchemes"]
    )
