"""Every endpoint against every kind of bad input: the documented 4xx with a clear message, never a 5xx, and a
good request still answered after each one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest

from tests.payloads import npy_bytes

MAX_ROWS = 64
MAX_BODY = 64 * 1024
ROW = [1.0, 2.0, 3.0, 4.0]  # the tiny model's input_dim is 4
LATENT = [0.1, -0.2]  # and its latent_dim 2


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    status: int
    message: str
    """A piece of the error message that says what was wrong."""
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _json(path: str, obj: Any, status: int, message: str, **headers: str) -> Case:
    return Case(
        "POST", path, status, message, orjson.dumps(obj), {"content-type": "application/json", **headers}
    )


def _raw(path: str, body: bytes, status: int, message: str, **headers: str) -> Case:
    return Case("POST", path, status, message, body, {"content-type": "application/octet-stream", **headers})


def _token(path: str, fld: str, width: int, token: str, status: int, message: str) -> Case:
    """A JSON body whose first tensor value is `token` as written (JSON itself cannot carry NaN)."""
    row = ", ".join([token] + ["1.0"] * (width - 1))
    body = f'{{"model": "tiny", "{fld}": [[{row}]]}}'.encode()
    return Case("POST", path, status, message, body, {"content-type": "application/json"})


def _nested(depth: int) -> bytes:
    return b'{"model": "tiny", "inputs": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


# (endpoint, tensor field, row width)
TENSOR_ENDPOINTS = [
    ("/encode", "inputs", ROW),
    ("/decode", "latents", LATENT),
    ("/denoise", "inputs", ROW),
    ("/reconstruction-error", "inputs", ROW),
]


def _tensor_cases() -> Iterator[tuple[str, Case]]:
    for path, fld, row in TENSOR_ENDPOINTS:
        width = len(row)
        good = {"model": "tiny", fld: [row]}

        def with_rows(rows: Any, base: dict[str, Any] = good, f: str = fld) -> dict[str, Any]:
            return {**base, f: rows}

        cases: dict[str, Case] = {
            "malformed-json": Case(
                "POST",
                path,
                400,
                "malformed JSON",
                b'{"model": "tiny", ',
                {"content-type": "application/json"},
            ),
            # NaN elsewhere in the text (here a model name) does not make a truncated body a NaN error.
            "malformed-json-nan-in-string": Case(
                "POST",
                path,
                400,
                "malformed JSON",
                b'{"model": "NaN-Infinity", ',
                {"content-type": "application/json"},
            ),
            "empty-body": Case(
                "POST", path, 400, "empty request body", b"", {"content-type": "application/json"}
            ),
            "json-array-body": _json(path, [row], 400, "expected a JSON object"),
            "wrong-content-type": Case(
                "POST",
                path,
                415,
                "unsupported Content-Type 'text/plain'",
                orjson.dumps(good),
                {"content-type": "text/plain"},
            ),
            "form-content-type": Case(
                "POST",
                path,
                415,
                "unsupported Content-Type",
                b"model=tiny",
                {"content-type": "application/x-www-form-urlencoded"},
            ),
            "missing-model": _json(path, {fld: [row]}, 422, "missing field 'model'"),
            "missing-tensor": _json(path, {"model": "tiny"}, 422, f"missing field {fld!r}"),
            "extra-field": _json(path, {**good, "bogus": 1}, 422, "unknown field 'bogus'"),
            "model-not-string": _json(path, {**good, "model": 7}, 422, "model"),
            "version-string": _json(path, {**good, "version": "2"}, 422, "version"),
            "version-bool": _json(path, {**good, "version": True}, 422, "version"),
            "version-zero": _json(path, {**good, "version": 0}, 422, "version"),
            "tensor-string": _json(path, with_rows("1,2,3,4"), 422, "expected a list of rows"),
            "tensor-null": _json(path, with_rows(None), 422, f"missing field {fld!r}"),
            "tensor-object": _json(path, with_rows({"a": 1}), 422, "expected a list of rows"),
            "row-not-list": _json(path, with_rows([1.0] * width), 422, "expected"),
            "string-value": _json(path, with_rows([["a"] * width]), 422, "is a string"),
            "bool-value": _json(path, with_rows([[True, *row[1:]]]), 422, "is a boolean"),
            "null-value": _json(path, with_rows([[None, *row[1:]]]), 422, "is null"),
            "nested-value": _json(path, with_rows([[[1.0], *row[1:]]]), 422, "expected a number"),
            "nested-3d": _json(path, with_rows([[row]]), 422, "expected"),
            "nested-too-deep": Case(
                "POST", path, 400, "malformed JSON", _nested(2000), {"content-type": "application/json"}
            ),
            "ragged-rows": _json(path, with_rows([row, row[:-1]]), 422, "ragged rows"),
            "empty-batch": _json(path, with_rows([]), 422, "empty batch"),
            "zero-length-rows": _json(path, with_rows([[], []]), 422, f"must have {width} values, got 0"),
            "wrong-row-length": _json(
                path, with_rows([[*row, 1.0]]), 422, f"must have {width} values, got {width + 1}"
            ),
            "nan": _token(path, fld, width, "NaN", 422, "NaN"),
            "infinity": _token(path, fld, width, "Infinity", 422, "Infinity"),
            "minus-infinity": _token(path, fld, width, "-Infinity", 422, "Infinity"),
            "beyond-double": _token(path, fld, width, "1e999", 422, "beyond the float range"),
            "huge-integer": _token(path, fld, width, "1" + "0" * 39, 422, "outside the float32 range"),
            "beyond-float32": _json(path, with_rows([[1e39, *row[1:]]]), 422, "outside the float32 range"),
            "beyond-float32-negative": _json(
                path, with_rows([[-3.5e38, *row[1:]]]), 422, "outside the float32 range"
            ),
            "huge-batch": _json(path, with_rows([row] * (MAX_ROWS + 1)), 413, "AE_MAX_BATCH_ROWS"),
            "body-over-limit": Case(
                "POST",
                path,
                413,
                "AE_MAX_BODY_BYTES",
                b" " * (MAX_BODY + 1),
                {"content-type": "application/json"},
            ),
            "unknown-model": _json(path, {**good, "model": "nope"}, 404, "unknown model 'nope'"),
            "unknown-version": _json(path, {**good, "version": 9}, 404, "has no version 9"),
            "model-dotdot": _json(path, {**good, "model": "../tiny"}, 404, "unknown model '../tiny'"),
            "model-slash": _json(path, {**good, "model": "tiny/2"}, 404, "unknown model 'tiny/2'"),
            "model-encoded-dotdot": _json(path, {**good, "model": "%2e%2e"}, 404, "unknown model '%2e%2e'"),
            "model-nul": _json(path, {**good, "model": "tiny\x00"}, 404, "unknown model 'tiny\\x00'"),
            "model-absolute": _json(
                path, {**good, "model": "/etc/passwd"}, 404, "unknown model '/etc/passwd'"
            ),
            # Binary bodies: the other fields come from the query string.
            "raw-no-shape": _raw(
                f"{path}?model=tiny", np.zeros((1, width), "<f4").tobytes(), 400, "X-Tensor-Shape"
            ),
            "raw-bad-shape": _raw(
                f"{path}?model=tiny",
                np.zeros((1, width), "<f4").tobytes(),
                400,
                "not comma-separated",
                **{"x-tensor-shape": "one,two"},
            ),
            "raw-short-body": _raw(
                f"{path}?model=tiny",
                np.zeros((1, width), "<f4").tobytes()[:-1],
                400,
                "needs",
                **{"x-tensor-shape": f"1,{width}"},
            ),
            "raw-long-body": _raw(
                f"{path}?model=tiny",
                np.zeros((2, width), "<f4").tobytes(),
                400,
                "needs",
                **{"x-tensor-shape": f"1,{width}"},
            ),
            "raw-wrong-width": _raw(
                f"{path}?model=tiny",
                np.zeros((1, width + 1), "<f4").tobytes(),
                422,
                f"must have {width} values",
                **{"x-tensor-shape": f"1,{width + 1}"},
            ),
            "raw-empty-batch": _raw(
                f"{path}?model=tiny", b"", 422, "empty batch", **{"x-tensor-shape": f"0,{width}"}
            ),
            "raw-nan": _raw(
                f"{path}?model=tiny",
                np.full((1, width), np.nan, "<f4").tobytes(),
                422,
                "finite",
                **{"x-tensor-shape": f"1,{width}"},
            ),
            "raw-inf": _raw(
                f"{path}?model=tiny",
                np.full((1, width), -np.inf, "<f4").tobytes(),
                422,
                "finite",
                **{"x-tensor-shape": f"1,{width}"},
            ),
            "raw-huge-batch": _raw(
                f"{path}?model=tiny",
                np.zeros((MAX_ROWS + 1, width), "<f4").tobytes(),
                413,
                "AE_MAX_BATCH_ROWS",
                **{"x-tensor-shape": f"{MAX_ROWS + 1},{width}"},
            ),
            "raw-missing-model": _raw(
                path,
                np.zeros((1, width), "<f4").tobytes(),
                422,
                "missing field 'model'",
                **{"x-tensor-shape": f"1,{width}"},
            ),
            "raw-version-text": _raw(
                f"{path}?model=tiny&version=two",
                np.zeros((1, width), "<f4").tobytes(),
                422,
                "version",
                **{"x-tensor-shape": f"1,{width}"},
            ),
            "raw-model-dotdot": _raw(
                f"{path}?model=..%2Ftiny",
                np.zeros((1, width), "<f4").tobytes(),
                404,
                "unknown model '../tiny'",
                **{"x-tensor-shape": f"1,{width}"},
            ),
            "npy-garbage": Case(
                "POST",
                f"{path}?model=tiny",
                400,
                "not a readable .npy",
                b"\x93NUMPY garbage",
                {"content-type": "application/x-npy"},
            ),
            "npy-truncated": Case(
                "POST",
                f"{path}?model=tiny",
                400,
                "not a readable .npy",
                npy_bytes(np.zeros((2, width), np.float32))[:-3],
                {"content-type": "application/x-npy"},
            ),
            "npy-strings": Case(
                "POST",
                f"{path}?model=tiny",
                422,
                "dtype",
                npy_bytes(np.array([["a"] * width])),
                {"content-type": "application/x-npy"},
            ),
            "npy-3d": Case(
                "POST",
                f"{path}?model=tiny",
                422,
                "2-D",
                npy_bytes(np.zeros((1, 1, width), np.float32)),
                {"content-type": "application/x-npy"},
            ),
            "npy-float64-beyond-float32": Case(
                "POST",
                f"{path}?model=tiny",
                422,
                "outside the float32 range",
                npy_bytes(np.full((1, width), 1e300)),
                {"content-type": "application/x-npy"},
            ),
            "unacceptable-accept": _json(path, good, 406, "cannot answer", accept="text/html"),
        }
        for name, case in cases.items():
            yield f"{path}:{name}", case


def _sample_cases() -> Iterator[tuple[str, Case]]:
    path = "/sample"
    cases = {
        "malformed-json": Case(
            "POST", path, 400, "malformed JSON", b"{", {"content-type": "application/json"}
        ),
        "binary-content-type": Case(
            "POST", path, 415, "takes a JSON body", b"\0\0", {"content-type": "application/octet-stream"}
        ),
        "missing-model": _json(path, {"n": 2}, 422, "missing field 'model'"),
        "extra-field": _json(path, {"model": "tiny-vae", "n": 2, "z": 1}, 422, "unknown field 'z'"),
        "n-string": _json(path, {"model": "tiny-vae", "n": "2"}, 422, "n"),
        "n-null": _json(path, {"model": "tiny-vae", "n": None}, 422, "n"),
        "n-zero": _json(path, {"model": "tiny-vae", "n": 0}, 422, "n"),
        "n-huge": _json(path, {"model": "tiny-vae", "n": MAX_ROWS + 1}, 413, "AE_MAX_BATCH_ROWS"),
        "n-beyond-int64": _json(path, {"model": "tiny-vae", "n": 10**19}, 413, "AE_MAX_BATCH_ROWS"),
        "seed-negative": _json(
            path,
            {"model": "tiny-vae", "n": 1, "seed": -1},
            422,
            "seed: Input should be greater than or equal to 0",
        ),
        "not-generative": _json(path, {"model": "tiny", "n": 1}, 422, "cannot generate"),
        "unknown-model": _json(path, {"model": "../tiny-vae", "n": 1}, 404, "unknown model '../tiny-vae'"),
    }
    for name, case in cases.items():
        yield f"{path}:{name}", case


def _v2_cases() -> Iterator[tuple[str, Case]]:
    infer = "/v2/models/tiny/infer"

    def request(**spec: Any) -> dict[str, Any]:
        tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ROW, **spec}
        return {"inputs": [tensor]}

    binary_header = orjson.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}
            ]
        }
    )
    cases = {
        "malformed-json": Case("POST", infer, 400, "malformed JSON", b'{"inputs": [', {}),
        "malformed-json-nan-in-string": Case(
            "POST", infer, 400, "malformed JSON", b'{"id": "NaN", "inputs": [', {}
        ),
        "empty-body": Case("POST", infer, 400, "empty inference request", b"", {}),
        "not-object": _json(infer, [1], 400, "expected an object"),
        "missing-inputs": _json(infer, {}, 400, "`inputs` must be a list"),
        "inputs-null": _json(infer, {"inputs": None}, 400, "`inputs` must be a list"),
        "wrong-input-name": _json(infer, request(name="y"), 400, "unknown input 'y'"),
        "shape-strings": _json(
            infer, request(shape=["1", "4"]), 400, "expected a list of non-negative integers"
        ),
        "shape-wrong-width": _json(
            infer, request(shape=[1, 5], data=[*ROW, 1.0]), 400, "expected [batch, 4]"
        ),
        "zero-batch": _json(infer, request(shape=[0, 4], data=[]), 400, "empty batch"),
        "datatype-bad": _json(infer, request(datatype="STRING"), 400, "datatype"),
        "data-strings": _json(infer, request(data=["a", "b", "c", "d"]), 400, "must be numbers"),
        "data-bools": _json(infer, request(data=[True, False, True, False]), 400, "must be numbers"),
        "data-nulls": _json(infer, request(data=[None] * 4), 400, "must be numbers"),
        "data-ragged": _json(infer, request(data=[[1.0, 2.0], [3.0]]), 400, "must be numbers"),
        "data-count": _json(infer, request(data=ROW[:3]), 400, "has 3 values"),
        "data-missing": _json(infer, request(data=None), 400, "no `data` list"),
        "output-name-list": _json(
            infer, {**request(), "outputs": [{"name": ["latent"]}]}, 400, "expected a string, one of"
        ),
        "output-name-object": _json(
            infer, {**request(), "outputs": [{"name": {"a": 1}}]}, 400, "expected a string, one of"
        ),
        "nan": Case("POST", infer, 400, "NaN", orjson.dumps(request()).replace(b"1.0", b"NaN", 1), {}),
        "infinity": Case(
            "POST", infer, 400, "Infinity", orjson.dumps(request()).replace(b"1.0", b"-Infinity", 1), {}
        ),
        "beyond-float32": _json(infer, request(data=[1e39, 2.0, 3.0, 4.0]), 400, "float32 range"),
        "nested-too-deep": Case(
            "POST", infer, 400, "malformed JSON", b'{"inputs": ' + b"[" * 2000 + b"]" * 2000 + b"}", {}
        ),
        "huge-batch": _json(
            infer, request(shape=[MAX_ROWS + 1, 4], data=[ROW] * (MAX_ROWS + 1)), 413, "AE_MAX_BATCH_ROWS"
        ),
        "body-over-limit": Case("POST", infer, 413, "AE_MAX_BODY_BYTES", b" " * (MAX_BODY + 1), {}),
        "binary-short": Case(
            "POST",
            infer,
            400,
            "only 12 remain",
            binary_header + b"\0" * 12,
            {"inference-header-content-length": str(len(binary_header))},
        ),
        "binary-long": Case(
            "POST",
            infer,
            400,
            "no input claims",
            binary_header + b"\0" * 20,
            {"inference-header-content-length": str(len(binary_header))},
        ),
        "binary-header-length-beyond-body": Case(
            "POST", infer, 400, "body has only", binary_header, {"inference-header-content-length": "100000"}
        ),
        "binary-header-length-text": Case(
            "POST",
            infer,
            400,
            "is not a number of bytes",
            binary_header,
            {"inference-header-content-length": "many"},
        ),
        "unknown-model": _json("/v2/models/nope/infer", request(), 404, "unknown model 'nope'"),
        "unknown-version": _json("/v2/models/tiny/versions/9/infer", request(), 404, "has no version 9"),
        "version-not-number": _json(
            "/v2/models/tiny/versions/abc/infer", request(), 400, "not a positive integer"
        ),
        "model-encoded-dotdot": _json("/v2/models/%2e%2e/infer", request(), 404, "unknown model '..'"),
        "model-nul": _json("/v2/models/tiny%00/infer", request(), 404, "unknown model 'tiny\\x00'"),
        "model-encoded-slash": _json("/v2/models/..%2Ftiny/infer", request(), 404, "Not Found"),
        "metadata-unknown": Case("GET", "/v2/models/%2e%2e%2fetc", 404, "Not Found"),
        "ready-unknown": Case("GET", "/v2/models/nope/ready", 404, "unknown model 'nope'"),
    }
    for name, case in cases.items():
        yield f"/v2:{name}", case


def _model_route_cases() -> Iterator[tuple[str, Case]]:
    cases = {
        "unknown": Case("GET", "/models/nope", 404, "unknown model 'nope'"),
        "encoded-dotdot": Case("GET", "/models/%2e%2e", 404, "unknown model '..'"),
        "nul": Case("GET", "/models/tiny%00", 404, "unknown model 'tiny\\x00'"),
        "encoded-slash": Case("GET", "/models/..%2F..%2Fetc%2Fpasswd", 404, "Not Found"),
        "wrong-method": Case("DELETE", "/models/tiny", 405, "Method Not Allowed"),
        "unknown-path": Case("GET", "/../../etc/passwd", 404, "Not Found"),
        "get-on-post-route": Case("GET", "/encode", 405, "Method Not Allowed"),
    }
    for name, case in cases.items():
        yield f"/models:{name}", case


CASES = dict([*_tensor_cases(), *_sample_cases(), *_v2_cases(), *_model_route_cases()])


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings
    from tests.conftest import FIXTURE_MODELS

    app = create_app(Settings(models_dir=FIXTURE_MODELS, max_batch_rows=MAX_ROWS, max_body_bytes=MAX_BODY))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _good(client: Any) -> None:
    r = client.post("/denoise", json={"model": "tiny", "inputs": [ROW]})
    assert r.status_code == 200, r.text
    assert np.asarray(r.json()["outputs"]).shape == (1, 4)
    v2 = client.post(
        "/v2/models/tiny/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": ROW}]},
    )
    assert v2.status_code == 200, v2.text


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_gets_documented_4xx_and_server_keeps_serving(client: Any, case: Case) -> None:
    r = client.request(case.method, case.path, content=case.body, headers=case.headers)
    assert r.status_code == case.status, r.text
    body = r.json()
    # v2 paths answer in the protocol's shape, a path no route matches included (perf_analyzer reads `error`).
    key = "error" if case.path.startswith("/v2/") else "detail"
    assert isinstance(body.get(key), str), body
    assert case.message in body[key], body[key]
    _good(client)


def test_bad_input_matrix_covers_every_post_route(client: Any) -> None:
    posts = {route.path for route in client.app.routes if "POST" in getattr(route, "methods", set())}
    tested = {c.path.split("?", 1)[0] for c in CASES.values()}
    tested = {
        p.replace("/v2/models/tiny/versions/9/", "/v2/models/{name}/versions/{version}/") for p in tested
    }
    tested = {p.replace("/v2/models/tiny/", "/v2/models/{name}/") for p in tested}
    missing = {p for p in posts if p not in tested and not p.startswith("/admin/")}
    assert not missing, f"routes without bad-input cases: {missing}"


def test_client_disconnect_mid_body_is_quiet_and_not_counted_as_500(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from service.app import create_app
    from service.settings import Settings
    from tests.conftest import FIXTURE_MODELS

    app = create_app(Settings(models_dir=FIXTURE_MODELS))
    sent: list[dict[str, Any]] = []

    async def scenario() -> str:
        async with app.router.lifespan_context(app) as state:
            messages = iter(
                [
                    {"type": "http.request", "body": b'{"model": "tiny", "inp', "more_body": True},
                    {"type": "http.disconnect"},
                ]
            )

            async def receive() -> dict[str, Any]:
                return next(messages)

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/denoise",
                "raw_path": b"/denoise",
                "root_path": "",
                "query_string": b"",
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", 8000),
                "state": dict(state),
            }
            await app(scope, receive, send)
            metrics = state["ae"].metrics
            return metrics.render().decode()

    text = asyncio.run(scenario())
    assert not sent, "nobody is left to answer"
    assert 'status="500"' not in text
    assert 'ae_requests_total{endpoint="/denoise",model="",status="499"} 1.0' in text
    assert not [r for r in caplog.records if r.levelname in {"ERROR", "CRITICAL"} or r.exc_info], caplog.text
