"""Run a model version on raw samples with ONNX Runtime (no torch): what the service will compute."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.contract import GraphFile, ModelMetadata

__all__ = ["ModelScores", "as_samples", "run_graph", "score_rows"]


Values = TypeVar("Values", bound=np.generic)


def as_samples(metadata: ModelMetadata, x: npt.NDArray[Values]) -> npt.NDArray[Values]:
    """`x` shaped as the model's graphs take it, (n, *input_shape): samples of that shape, or of any shape
    holding as many values in the same order (an image flattened to a row, a row of an image); ValueError
    otherwise."""
    if x.ndim < 2 or math.prod(x.shape[1:]) != metadata.input_dim:
        raise ValueError(
            f"expected samples of shape {tuple(metadata.sample_shape)} ({metadata.input_dim} values each), "
            f"got shape {tuple(x.shape)}"
        )
    return x.reshape(len(x), *metadata.sample_shape)


def run_graph(
    directory: Path, graph: GraphFile, x: npt.NDArray[np.floating]
) -> dict[str, npt.NDArray[np.float32]]:
    """All outputs of one graph of a version directory on input `x`, by output name."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(directory / graph.path), options, providers=["CPUExecutionProvider"])
    rows = np.ascontiguousarray(x, dtype=np.float32)
    return dict(zip(graph.outputs, session.run(graph.outputs, {graph.inputs[0]: rows}), strict=True))


@dataclass(frozen=True)
class ModelScores:
    """Outputs of the fused graph for a batch of rows."""

    reconstruction: npt.NDArray[np.float32]
    """(n, *input_shape) in raw units."""
    feature_errors: npt.NDArray[np.float32]
    """(n, *input_shape) squared errors in the normalised space."""
    scores: dict[str, npt.NDArray[np.float32]]
    """Score name (as in `metadata.scores`) -> (n,)."""


def score_rows(directory: Path, x: npt.NDArray[np.floating]) -> ModelScores:
    """Score raw samples `x` (n, *input_shape, or flattened, see `as_samples`) with the model version in
    `directory` (its model.onnx)."""
    metadata = ModelMetadata.read(directory)
    outputs = run_graph(directory, metadata.graphs["model"], as_samples(metadata, x))
    return ModelScores(
        reconstruction=outputs["reconstruction"],
        feature_errors=outputs["feature_errors"],
        scores={s: outputs[metadata.score_output(s)] for s in metadata.scores},
    )
