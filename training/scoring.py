"""Run a model version directory on raw rows with ONNX Runtime (no torch): what the service will compute."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.contract import GraphFile, ModelMetadata

__all__ = ["ModelScores", "run_graph", "score_rows"]


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
    """(rows, input_dim) in raw units."""
    feature_errors: npt.NDArray[np.float32]
    """(rows, input_dim) squared errors in the normalised space."""
    scores: dict[str, npt.NDArray[np.float32]]
    """Score name (as in `metadata.scores`) -> (rows,)."""


def score_rows(directory: Path, x: npt.NDArray[np.floating]) -> ModelScores:
    """Score raw rows `x` (rows, input_dim) with the model version in `directory` (its model.onnx)."""
    metadata = ModelMetadata.read(directory)
    if x.ndim != 2 or x.shape[1] != metadata.input_dim:
        raise ValueError(f"expected rows of {metadata.input_dim} features, got shape {tuple(x.shape)}")
    outputs = run_graph(directory, metadata.graphs["model"], x)
    return ModelScores(
        reconstruction=outputs["reconstruction"],
        feature_errors=outputs["feature_errors"],
        scores={s: outputs[metadata.score_output(s)] for s in metadata.scores},
    )
