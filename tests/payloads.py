"""Request bodies in the encodings the service accepts besides JSON."""

from __future__ import annotations

import io

import numpy as np

__all__ = ["npy_bytes"]


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` as an `application/x-npy` body (what `np.save` writes)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
