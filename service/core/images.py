"""Image files in and out: PNG bodies to a model's samples, and samples (or error maps) back to PNG.

An 8-bit PNG's values 0..255 map linearly onto the model's `ImageSpec.pixel_range` (digits: 0..16); answers
map back the same way, clipped. A file is checked before it is decoded: it must be a PNG, 8 bits per
channel (16-bit is refused rather than silently rounded), at most `MAX_PIXELS` pixels (so a decompression
bomb is refused by its header), and of the model's size unless the request asks to resize. Grey images
feed one-channel models; RGB or RGBA three-channel ones (alpha is dropped); palette images are expanded.
Several files come as a multipart/form-data body (one per part) and go back as multipart/mixed. An error
map is each pixel's squared error (mean over channels) drawn as a heat map, scaled to the model's default
threshold times the pixel count's worth, so that a map looks the same from image to image.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image

from service.core.inputs import Samples, check_rows, from_array
from service.core.runtime import OnnxModel
from service.core.tasks import Answer, Call
from service.errors import BadRequestError, InvalidInputError, PayloadTooLargeError

__all__ = ["MAX_FILES", "MAX_PIXELS", "answer_pngs", "from_png", "multipart_files", "to_png"]

MAX_PIXELS = 4096 * 4096
"""Largest image (width x height) decoded; a bigger header is refused before any pixel is read."""
MAX_FILES = 256
"""Most files in one multipart body."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MODES = {"L": 1, "LA": 1, "RGB": 3, "RGBA": 3, "P": 3, "1": 1}


def _image(model: OnnxModel) -> Any:
    spec = model.metadata.image
    if spec is None:
        raise InvalidInputError(
            f"model {model.metadata.name} does not take images (its samples are {model.metadata.kind}); "
            "send `inputs` arrays"
        )
    return spec


def _decode(data: bytes, index: int, model: OnnxModel, resize: bool) -> np.ndarray[Any, Any]:
    """One PNG -> (channels, height, width) float32 raw values."""
    spec = _image(model)
    where = f"image {index}"
    if not data.startswith(_PNG_SIGNATURE):
        raise BadRequestError(f"{where} is not a PNG file (no PNG signature); expected image/png")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["PNG"])
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise PayloadTooLargeError(
                    f"{where} is {width}x{height} pixels, over the limit of {MAX_PIXELS} pixels"
                )
            mode = image.mode
            if mode not in _MODES:
                raise InvalidInputError(
                    f"{where} has mode {mode!r} (e.g. 16 bits per channel); expected an 8-bit grey, RGB or "
                    "RGBA PNG"
                )
            image.load()
    except (PayloadTooLargeError, InvalidInputError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PayloadTooLargeError(f"{where} decompresses to too many pixels: {exc}") from None
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError... for a broken file
        raise BadRequestError(f"{where} is not a readable PNG file ({exc})") from None
    if (width, height) != (spec.width, spec.height):
        if not resize:
            raise InvalidInputError(
                f"{where} is {width}x{height} pixels; model {model.metadata.name} takes {spec.width}x"
                f"{spec.height} (send resize=true to have it resized)"
            )
        converted = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    else:
        converted = image
    converted = converted.convert("L" if spec.channels == 1 else "RGB")
    pixels = np.asarray(converted, dtype=np.float32)  # (H, W) or (H, W, 3)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)
    if pixels.shape[0] != spec.channels:
        raise InvalidInputError(f"{where} has {pixels.shape[0]} channels; the model takes {spec.channels}")
    low, high = spec.pixel_range
    raw: np.ndarray[Any, Any] = low + (high - low) * pixels / 255.0
    return raw


def from_png(model: OnnxModel, files: list[bytes], resize: bool, max_rows: int) -> Samples:
    """PNG files -> Samples of the model's images (the request's layout: one image each)."""
    spec = _image(model)
    check_rows(len(files), "images", max_rows)
    batch = np.stack([_decode(data, i, model, resize) for i, data in enumerate(files)])  # (n, C, H, W)
    samples = from_array(model, batch, "images", max_rows)
    shape = (spec.height, spec.width) if spec.channels == 1 else (spec.channels, spec.height, spec.width)
    return Samples(samples.x, shape)


def multipart_files(body: bytes, content_type: str) -> list[bytes]:
    """The parts of a multipart/form-data body, in order (each one image file)."""
    boundary = None
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary or len(boundary) > 200:
        raise BadRequestError("a multipart/form-data body needs a boundary in its Content-Type")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise BadRequestError("the multipart body does not end with its closing boundary")
    files = []
    for chunk in chunks[1:-1]:
        _, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            raise BadRequestError("a multipart part has no blank line after its headers")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        files.append(content)
        if len(files) > MAX_FILES:
            raise PayloadTooLargeError(f"the multipart body has over {MAX_FILES} files")
    if not files:
        raise InvalidInputError("the multipart body holds no files")
    return files


def to_png(image: np.ndarray[Any, Any], pixel_range: tuple[float, float]) -> bytes:
    """(C, H, W) or (H, W) raw values -> PNG bytes (grey or RGB)."""
    low, high = pixel_range
    scaled = np.clip((image - low) / (high - low) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if scaled.ndim == 3:
        scaled = scaled[0] if scaled.shape[0] == 1 else scaled.transpose(1, 2, 0)
    buffer = io.BytesIO()
    Image.fromarray(scaled).save(buffer, format="PNG")
    return buffer.getvalue()


def _heat(errors: np.ndarray[Any, Any], scale: float) -> np.ndarray[Any, Any]:
    """(H, W) squared errors -> (3, H, W) an RGB heat map in 0..1: black, red, yellow, white."""
    t = np.clip(errors / scale, 0.0, 1.0)
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)])


def answer_pngs(call: Call[Any], answer: Answer) -> list[bytes]:
    """The answer's images as PNG files: its outputs, or for a score its per-pixel error maps."""
    model = call.model
    spec = _image(model)
    shape = (spec.channels, spec.height, spec.width)
    if call.task.name == "reconstruction_error":
        if "feature_errors" not in answer.tensors:
            raise InvalidInputError("a PNG error map needs per_feature=true")
        maps = answer.tensors["feature_errors"].reshape(-1, *shape).mean(axis=1)  # (n, H, W)
        threshold = answer.facts.get("threshold")
        scale = 4.0 * float(threshold) if threshold else float(maps.max() or 1.0)
        return [to_png(_heat(m, scale), (0.0, 1.0)) for m in maps]
    outputs = answer.tensors["outputs"].reshape(-1, *shape)
    return [to_png(image, spec.pixel_range) for image in outputs]
