from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_digits


@pytest.fixture(scope="session")
def digits() -> npt.NDArray[np.float32]:
    """The first 200 digits, raw pixel values 0..16, (200, 64)."""
    rows: npt.NDArray[np.float32] = load_digits().data[:200].astype(np.float32)
    return rows
