"""The committed OpenAPI schema matches the app's; operations are documented for generated clients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.app import create_app
from service.settings import Settings

COMMITTED = Path(__file__).resolve().parents[2] / "service" / "openapi.json"
TENSOR_ROUTES = {"/encode": "encode", "/decode": "decode", "/denoise": "denoise"}
TENSOR_ROUTES["/reconstruction-error"] = "reconstruction_error"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def test_openapi_committed_schema_has_not_drifted(schema: dict[str, Any]) -> None:
    committed = json.loads(COMMITTED.read_text())
    assert committed == schema, "regenerate with: python -m service --write-openapi service/openapi.json"


def test_openapi_operation_ids_are_clean(schema: dict[str, Any]) -> None:
    ids = {path: op["operationId"] for path, ops in schema["paths"].items() for op in ops.values()}
    expected = {
        **TENSOR_ROUTES,
        "/sample": "sample",
        "/models": "list_models",
        "/models/{name}": "get_model",
        "/healthz": "healthz",
        "/readyz": "readyz",
        "/metrics": "metrics",
        "/info": "info",
    }
    assert {p: ids[p] for p in expected} == expected


@pytest.mark.parametrize("path", [*TENSOR_ROUTES])
def test_openapi_tensor_routes_document_typed_and_binary_bodies(schema: dict[str, Any], path: str) -> None:
    op = schema["paths"][path]["post"]
    content = op["requestBody"]["content"]
    ref = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert ref in schema["components"]["schemas"]
    assert "inputs" in schema["components"]["schemas"][ref]["properties"] or path == "/decode"
    assert {"application/x-npy", "application/octet-stream"} <= set(content)
    answers = op["responses"]["200"]["content"]
    assert answers["application/json"]["schema"]["$ref"].endswith("Response")
    assert {"application/x-npy", "application/octet-stream"} <= set(answers)
    assert {"400", "404", "406", "413", "415", "422", "503"} <= set(op["responses"])
    query = {p["name"] for p in op["parameters"] if p["in"] == "query"}
    assert {"model", "version"} <= query


def test_openapi_reconstruction_error_request_fields(schema: dict[str, Any]) -> None:
    props = schema["components"]["schemas"]["ReconstructionErrorRequest"]["properties"]
    assert {
        "model",
        "version",
        "inputs",
        "records",
        "threshold",
        "false_alarm_rate",
        "score",
        "per_feature",
    } == set(props)
    response = schema["components"]["schemas"]["ReconstructionErrorResponse"]["properties"]
    assert {"threshold_source", "false_alarm_rate", "anomalies", "feature_errors", "errors"} <= set(response)
