"""What ONNX Runtime answers on a model version's own files: the reference the service is held to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract import GraphRole, ModelMetadata

__all__ = ["fused_outputs", "graph_outputs"]


def graph_outputs(version_dir: Path, role: GraphRole, feed: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of one graph of `version_dir`, by name, run directly with ONNX Runtime on `feed`."""
    graph = ModelMetadata.read(version_dir).graphs[role]
    session = ort.InferenceSession(str(version_dir / graph.path), providers=["CPUExecutionProvider"])
    outputs: list[np.ndarray] = session.run(graph.outputs, {graph.inputs[0]: feed})
    return dict(zip(graph.outputs, outputs, strict=True))


def fused_outputs(version_dir: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the fused graph (`model.onnx`: latent, reconstruction, errors...) on raw rows `x`."""
    return graph_outputs(version_dir, "model", x)
