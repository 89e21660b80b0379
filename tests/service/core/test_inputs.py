"""Every kind of input, built once in the core: named records and CSV, series cut into windows, images in
several layouts and as PNG files; the same numbers over REST and v2, and answers in the request's layout."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.fixtures.make_shaped import SHAPED_MODELS, numpy_outputs

NAMES = ["a", "b", "c", "d"]


def _weights(name: str) -> dict[str, np.ndarray]:
    with np.load(SHAPED_MODELS / name / "weights.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    with TestClient(create_app(Settings(models_dir=SHAPED_MODELS, max_batch_rows=64))) as c:
        yield c


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- named columns ------------------------------------------------------------------------------------------


ROWS = np.random.default_rng(0).normal(5, 2, (6, 4)).round(4)


def test_records_in_any_key_order_score_as_ordered_rows(client: Any) -> None:
    ordered = _ok(client.post("/reconstruction-error", json={"model": "tiny-named", "inputs": ROWS.tolist()}))
    rng = np.random.default_rng(1)
    records = []
    for row in ROWS:
        keys = list(rng.permutation(NAMES))
        records.append({k: float(row[NAMES.index(k)]) for k in keys})
    named = _ok(client.post("/reconstruction-error", json={"model": "tiny-named", "records": records}))
    np.testing.assert_allclose(named["errors"], ordered["errors"], rtol=1e-6)
    expected = numpy_outputs(_weights("tiny-named"), ROWS.astype(np.float32))["error"]
    np.testing.assert_allclose(named["errors"], expected, rtol=1e-5)


def test_records_answer_per_feature_errors_by_name_and_top_features(client: Any) -> None:
    records = [dict(zip(NAMES, row.tolist(), strict=True)) for row in ROWS]
    body = {"model": "tiny-named", "records": records, "per_feature": True, "threshold": 0.0}
    answer = _ok(client.post("/reconstruction-error", json=body))
    assert set(answer["feature_errors"][0]) == set(NAMES)
    first = answer["feature_errors"][0]
    assert answer["errors"][0] == pytest.approx(np.mean(list(first.values())), rel=1e-5)
    top = answer["top_features"][0]
    assert [name for name, _ in top] == sorted(first, key=first.__getitem__, reverse=True)[:3]
    denoised = _ok(client.post("/denoise", json={"model": "tiny-named", "records": records}))
    assert set(denoised["outputs"][0]) == set(NAMES)


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({"a": 1, "b": 2, "c": 3}, "lacks 'd'"),
        ({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, "has unknown columns 'e'"),
        ({"a": 1, "b": 2, "c": 3, "x": 4}, "lacks 'd' and has unknown columns 'x'"),
        ({"a": 1, "b": 2, "c": 3, "d": "four"}, "records[0].d is 'four'; expected a number"),
        ({"a": 1, "b": 2, "c": 3, "d": True}, "expected a number"),
    ],
)
def test_records_missing_or_unknown_columns_name_themselves(
    client: Any, record: dict[str, Any], fragment: str
) -> None:
    r = client.post("/reconstruction-error", json={"model": "tiny-named", "records": [record]})
    assert r.status_code == 422
    assert fragment in r.json()["detail"]


def test_records_refused_for_a_model_without_column_names(client: Any) -> None:
    r = client.post("/encode", json={"model": "tiny-image", "records": [{"a": 1}]})
    assert r.status_code == 422 and "takes images" in r.json()["detail"]


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_csv_body_is_matched_by_header_names(client: Any, delimiter: str) -> None:
    header = ["d", "b", "a", "c"]
    lines = [delimiter.join(header)] + [
        delimiter.join(str(row[NAMES.index(h)]) for h in header) for row in ROWS
    ]
    r = client.post(
        "/reconstruction-error?model=tiny-named",
        content="\n".join(lines),
        headers={"content-type": "text/csv"},
    )
    expected = numpy_outputs(_weights("tiny-named"), ROWS.astype(np.float32))["error"]
    np.testing.assert_allclose(_ok(r)["errors"], expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a,b,c\n1,2,3\n", "the CSV header lacks 'd'"),
        ("a,b,c,d,z\n1,2,3,4,5\n", "has unknown columns 'z'"),
        ("a,b,c,d\n1,2,3,x\n", "CSV line 2 column 'd' is 'x'; expected a number"),
        ("a,b,c,d\n1,2,3\n", "CSV line 2 has 3 fields"),
        ("a,b,c,d\n", "has a header but no rows"),
        ("", "the CSV body is empty"),
    ],
)
def test_csv_body_errors_say_what_is_wrong(client: Any, text: str, fragment: str) -> None:
    r = client.post("/encode?model=tiny-named", content=text, headers={"content-type": "text/csv"})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]


def test_v2_one_input_per_column_equals_rest(client: Any) -> None:
    inputs = [
        {"name": n, "datatype": "FP64", "shape": [len(ROWS)], "data": ROWS[:, i].tolist()}
        for i, n in enumerate(NAMES)
    ]
    answer = _ok(
        client.post(
            "/v2/models/tiny-named/infer", json={"inputs": inputs[::-1], "outputs": [{"name": "error"}]}
        )
    )
    rest = _ok(client.post("/reconstruction-error", json={"model": "tiny-named", "inputs": ROWS.tolist()}))
    np.testing.assert_allclose(answer["outputs"][0]["data"], rest["errors"], rtol=1e-6)
    missing = client.post("/v2/models/tiny-named/infer", json={"inputs": inputs[:3]})
    assert missing.status_code == 400 and "lacks 'd'" in missing.json()["error"]


# --- series -------------------------------------------------------------------------------------------------

SERIES = np.random.default_rng(3).normal(10, 3, (40, 2)).round(3)  # (T=40 steps, 2 channels)
WINDOW = 4


def _series_errors(client: Any, series: np.ndarray) -> list[float]:
    return list(
        _ok(client.post("/reconstruction-error", json={"model": "tiny-series", "inputs": series.tolist()}))[
            "errors"
        ]
    )


def test_series_scores_every_step_with_the_training_windows(client: Any) -> None:
    from service.core.windows import cut_windows, to_steps

    answer = _ok(
        client.post("/reconstruction-error", json={"model": "tiny-series", "inputs": SERIES.tolist()})
    )
    assert len(answer["errors"]) == len(answer["anomalies"]) == 40
    assert len(answer["window_errors"]) == 40 - WINDOW + 1
    windows = np.ascontiguousarray(cut_windows(SERIES.astype(np.float32), WINDOW))
    outputs = numpy_outputs(_weights("tiny-series"), windows)
    np.testing.assert_allclose(
        answer["errors"], to_steps(outputs["feature_errors"].mean(axis=2), "last"), rtol=1e-5
    )
    np.testing.assert_allclose(answer["window_errors"], outputs["error"], rtol=1e-5)


@pytest.mark.parametrize("chunk", [4, 7, 13])
def test_series_one_request_chunks_and_window_by_window_agree(client: Any, chunk: int) -> None:
    whole = _series_errors(client, SERIES)
    # Overlapping chunks (each starting window - 1 steps before the last one ended): the steps they add.
    stitched = _series_errors(client, SERIES[:chunk])
    start = chunk
    while start < len(SERIES):
        piece = SERIES[start - (WINDOW - 1) : start + chunk]
        stitched += _series_errors(client, piece)[WINDOW - 1 :]
        start += chunk
    np.testing.assert_allclose(stitched, whole, rtol=1e-6)
    # Streaming: each new step sent with the window - 1 before it; its score is the last one answered.
    streamed = _series_errors(client, SERIES[:WINDOW])
    for t in range(WINDOW, len(SERIES)):
        streamed.append(_series_errors(client, SERIES[t - WINDOW + 1 : t + 1])[-1])
    np.testing.assert_allclose(streamed, whole, rtol=1e-6)


def test_series_a_longer_series_never_changes_an_unchanged_windows_score(client: Any) -> None:
    short = _ok(
        client.post("/reconstruction-error", json={"model": "tiny-series", "inputs": SERIES[:20].tolist()})
    )
    long = _ok(client.post("/reconstruction-error", json={"model": "tiny-series", "inputs": SERIES.tolist()}))
    np.testing.assert_allclose(
        long["window_errors"][: len(short["window_errors"])], short["window_errors"], rtol=1e-6
    )
    np.testing.assert_allclose(long["errors"][:20], short["errors"], rtol=1e-6)


def test_series_windows_sent_as_they_are_score_their_newest_step(client: Any) -> None:
    from service.core.windows import cut_windows

    windows = np.ascontiguousarray(cut_windows(SERIES[:10].astype(np.float32), WINDOW))
    answer = _ok(
        client.post("/reconstruction-error", json={"model": "tiny-series", "inputs": windows.tolist()})
    )
    np.testing.assert_allclose(answer["errors"], _series_errors(client, SERIES[:10])[WINDOW - 1 :], rtol=1e-6)


def test_series_denoise_and_encode_answer_per_step_and_per_window(client: Any) -> None:
    denoised = _ok(client.post("/denoise", json={"model": "tiny-series", "inputs": SERIES.tolist()}))
    assert np.asarray(denoised["outputs"]).shape == (40, 2)
    encoded = _ok(client.post("/encode", json={"model": "tiny-series", "inputs": SERIES.tolist()}))
    assert np.asarray(encoded["latents"]).shape == (40 - WINDOW + 1, 2)


def test_series_records_and_csv_with_a_time_column(client: Any) -> None:
    records = [
        {"t": f"2024-01-01T00:00:{i:02d}", "temp": float(r[1]), "flow": float(r[0])}
        for i, r in enumerate(SERIES[:10])
    ]
    named = _ok(client.post("/reconstruction-error", json={"model": "tiny-series", "records": records}))
    np.testing.assert_allclose(named["errors"], _series_errors(client, SERIES[:10]), rtol=1e-6)
    text = "t;flow;temp\n" + "\n".join(f"{i};{r[0]};{r[1]}" for i, r in enumerate(SERIES[:10]))
    csv = _ok(
        client.post(
            "/reconstruction-error?model=tiny-series", content=text, headers={"content-type": "text/csv"}
        )
    )
    np.testing.assert_allclose(csv["errors"], named["errors"], rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"inputs": SERIES[:3].tolist()}, 422, "the model's window is 4 steps, so send at least 4"),
        ({"inputs": np.zeros((10, 3)).tolist()}, 422, "expected one series (steps, 2)"),
        ({"inputs": [[1.0, float("nan")]] * 5}, 422, "NaN"),
        ({"inputs": np.zeros((80, 2)).tolist()}, 413, "AE_MAX_BATCH_ROWS"),
        (
            {"records": [{"t": 2, "flow": 1, "temp": 1}, {"t": 1, "flow": 1, "temp": 1}] * 3},
            422,
            "goes back in time",
        ),
        ({"records": [{"t": 1, "flow": 1, "temp": 1}] * 5}, 422, "repeats a time"),
    ],
)
def test_series_bad_input_is_a_clear_4xx(
    client: Any, body: dict[str, Any], status: int, fragment: str
) -> None:
    import orjson

    content = orjson.dumps({"model": "tiny-series", **body}, option=orjson.OPT_SERIALIZE_NUMPY)
    if b"NaN" not in content and "nan" in str(body):
        content = content.replace(b"null", b"NaN")
    r = client.post("/reconstruction-error", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_series_v2_step_outputs_equal_rest(client: Any) -> None:
    tensor = {"name": "x", "datatype": "FP32", "shape": list(SERIES.shape), "data": SERIES.ravel().tolist()}
    body = {
        "inputs": [tensor],
        "outputs": [{"name": "step_error"}, {"name": "step_anomaly"}, {"name": "error"}],
    }
    answer = _ok(client.post("/v2/models/tiny-series/infer", json=body))
    outputs = {o["name"]: o for o in answer["outputs"]}
    rest = _ok(client.post("/reconstruction-error", json={"model": "tiny-series", "inputs": SERIES.tolist()}))
    np.testing.assert_allclose(outputs["step_error"]["data"], rest["errors"], rtol=1e-6)
    assert (
        outputs["step_anomaly"]["data"] == rest["anomalies"] and outputs["step_anomaly"]["datatype"] == "BOOL"
    )
    np.testing.assert_allclose(outputs["error"]["data"], rest["window_errors"], rtol=1e-6)


# --- images -------------------------------------------------------------------------------------------------

IMAGES = np.random.default_rng(5).uniform(0, 255, (3, 4, 4)).round()  # (n, H, W) grey levels


@pytest.mark.parametrize("layout", ["flat", "hw", "chw"])
def test_images_in_every_layout_score_the_same_and_answer_in_it(client: Any, layout: str) -> None:
    shaped = {"flat": IMAGES.reshape(3, 16), "hw": IMAGES, "chw": IMAGES.reshape(3, 1, 4, 4)}[layout]
    scored = _ok(
        client.post(
            "/reconstruction-error",
            json={"model": "tiny-image", "inputs": shaped.tolist(), "per_feature": True},
        )
    )
    expected = numpy_outputs(_weights("tiny-image"), IMAGES.reshape(3, 1, 4, 4).astype(np.float32))
    np.testing.assert_allclose(scored["errors"], expected["error"], rtol=1e-5)
    assert np.asarray(scored["feature_errors"]).shape == shaped.shape  # the per-pixel error map, as sent
    denoised = _ok(client.post("/denoise", json={"model": "tiny-image", "inputs": shaped.tolist()}))
    assert np.asarray(denoised["outputs"]).shape == shaped.shape
    np.testing.assert_allclose(
        np.asarray(denoised["outputs"]).reshape(3, 1, 4, 4), expected["reconstruction"], rtol=1e-4
    )


def _png(pixels: np.ndarray, sixteen_bit: bool = False) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels.astype(np.uint16 if sixteen_bit else np.uint8))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_png_round_trip_gives_a_png_of_the_same_size(client: Any) -> None:
    r = client.post(
        "/denoise?model=tiny-image",
        content=_png(IMAGES[0]),
        headers={"content-type": "image/png", "accept": "image/png"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    answer = Image.open(io.BytesIO(r.content))
    assert answer.size == (4, 4) and answer.mode == "L"
    as_json = _ok(client.post("/denoise", json={"model": "tiny-image", "inputs": IMAGES[:1].tolist()}))
    np.testing.assert_allclose(
        np.asarray(answer, dtype=np.float64), np.clip(np.asarray(as_json["outputs"][0]), 0, 255), atol=1.0
    )


def test_png_scores_equal_array_scores_and_give_an_error_map(client: Any) -> None:
    scored = _ok(
        client.post(
            "/reconstruction-error?model=tiny-image",
            content=_png(IMAGES[0]),
            headers={"content-type": "image/png"},
        )
    )
    array = _ok(
        client.post("/reconstruction-error", json={"model": "tiny-image", "inputs": IMAGES[:1].tolist()})
    )
    np.testing.assert_allclose(scored["errors"], array["errors"], rtol=1e-5)
    heat = client.post(
        "/reconstruction-error?model=tiny-image",
        content=_png(IMAGES[0]),
        headers={"content-type": "image/png", "accept": "image/png"},
    )
    assert heat.status_code == 200 and Image.open(io.BytesIO(heat.content)).mode == "RGB"


def test_multipart_upload_of_several_images(client: Any) -> None:
    files = [("image", (f"{i}.png", _png(IMAGES[i]), "image/png")) for i in range(3)]
    r = client.post("/reconstruction-error?model=tiny-image", files=files)
    array = _ok(client.post("/reconstruction-error", json={"model": "tiny-image", "inputs": IMAGES.tolist()}))
    np.testing.assert_allclose(_ok(r)["errors"], array["errors"], rtol=1e-5)
    several = client.post("/denoise?model=tiny-image", files=files, headers={"accept": "image/png"})
    assert several.status_code == 200 and several.headers["content-type"].startswith("multipart/mixed")
    assert several.content.count(b"Content-Type: image/png") == 3


def _bomb() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    width = height = 30000
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = zlib.compress(b"\0" * (width + 1) * 64)  # a sliver of rows: the header is what is refused
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"GIF89a not a png", 400, "is not a PNG file"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, 400, "not a readable PNG"),
        (_png(np.zeros((8, 8))), 422, "is 8x8 pixels; model tiny-image takes 4x4 (send resize=true"),
        (_png(np.zeros((4, 4)), sixteen_bit=True), 422, "8-bit grey, RGB or RGBA PNG"),
        (_bomb(), 413, "too many pixels"),
    ],
    ids=["not-png", "broken-png", "wrong-size", "sixteen-bit", "decompression-bomb"],
)
def test_bad_images_are_a_clear_4xx(client: Any, body: bytes, status: int, fragment: str) -> None:
    r = client.post("/denoise?model=tiny-image", content=body, headers={"content-type": "image/png"})
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]


def test_wrong_size_png_is_resized_when_asked(client: Any) -> None:
    r = client.post(
        "/denoise?model=tiny-image&resize=true",
        content=_png(np.zeros((8, 8))),
        headers={"content-type": "image/png"},
    )
    assert np.asarray(_ok(r)["outputs"]).shape == (1, 4, 4)


def test_png_for_a_model_without_images_is_refused(client: Any) -> None:
    r = client.post(
        "/denoise?model=tiny-named", content=_png(np.zeros((4, 4))), headers={"content-type": "image/png"}
    )
    assert r.status_code == 422 and "does not take images" in r.json()["detail"]


def test_image_tensors_over_v2_equal_rest(client: Any) -> None:
    tensor = {"name": "x", "datatype": "FP32", "shape": [3, 4, 4], "data": IMAGES.ravel().tolist()}
    answer = _ok(
        client.post(
            "/v2/models/tiny-image/infer",
            json={"inputs": [tensor], "outputs": [{"name": "error"}, {"name": "reconstruction"}]},
        )
    )
    outputs = {o["name"]: o for o in answer["outputs"]}
    rest = _ok(client.post("/reconstruction-error", json={"model": "tiny-image", "inputs": IMAGES.tolist()}))
    np.testing.assert_allclose(outputs["error"]["data"], rest["errors"], rtol=1e-6)
    assert outputs["reconstruction"]["shape"] == [3, 1, 4, 4]


def test_npy_images_answer_an_npy_of_the_same_shape(client: Any) -> None:
    buffer = io.BytesIO()
    np.save(buffer, IMAGES[:2].astype(np.float32))  # (2, 4, 4): the model's (height, width)
    r = client.post(
        "/denoise?model=tiny-image",
        content=buffer.getvalue(),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    assert r.status_code == 200, r.text
    answer = np.load(io.BytesIO(r.content))
    as_json = _ok(client.post("/denoise", json={"model": "tiny-image", "inputs": IMAGES[:2].tolist()}))
    assert answer.shape == (2, 4, 4)
    np.testing.assert_allclose(answer, as_json["outputs"], rtol=1e-5)


def test_decode_answers_a_png_when_asked(client: Any) -> None:
    latents = [[0.1, -0.2]]
    r = client.post(
        "/decode", json={"model": "tiny-image", "latents": latents}, headers={"accept": "image/png"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (4, 4)
    decoded = _ok(client.post("/decode", json={"model": "tiny-image", "latents": latents}))
    expected = np.clip(np.asarray(decoded["outputs"][0]).reshape(4, 4), 0, 255)
    np.testing.assert_allclose(np.asarray(Image.open(io.BytesIO(r.content)), np.float64), expected, atol=1.0)
