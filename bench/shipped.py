"""The shipped digits models, one table: held-out metrics from each version's metadata and the realised
false-alarm rate of each score's default threshold on the version's own held-out rows (`test.npy`).

    python -m bench.shipped [--models models]

Every number is read from the model repository or computed through the exported `model.onnx` with ONNX
Runtime, so the table is exactly what `python -m training defaults --out models` produced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract import ModelMetadata

COLUMNS = [
    ("encoder", None),
    ("test MSE (normalised)", "test_mse"),
    ("test MSE (raw)", "test_mse_raw"),
    ("/ PCA, same k", "mse_to_pca_ratio"),
    ("code near zero", "code_near_zero_fraction"),
    ("mean code activation", "code_mean_activation"),
    ("mean ‖J‖²_F", "jacobian_frobenius_sq"),
    ("sum w²", "weights_sq_sum"),
    ("denoised / noisy", "denoise_to_noisy_ratio"),
]


def realised_rates(directory: Path, metadata: ModelMetadata) -> dict[str, float]:
    """Fraction of the held-out rows above each score's default threshold."""
    rows = np.load(directory / "test.npy").astype(np.float32)
    graph = metadata.graphs["model"]
    session = ort.InferenceSession(str(directory / graph.path), providers=["CPUExecutionProvider"])
    shaped = rows.reshape(len(rows), *metadata.input_shape)
    outputs = dict(zip(graph.outputs, session.run(graph.outputs, {graph.inputs[0]: shaped}), strict=True))
    rates = {}
    for score, calibration in metadata.calibration.items():
        values = outputs[metadata.score_outputs[score]].reshape(len(rows))
        rates[score] = float(np.mean(values > calibration.threshold))
    return rates


def table(models: Path) -> list[str]:
    header = ["objective", *(name for name, _ in COLUMNS), "false alarms at 1% (test rows)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for directory in sorted(models.glob("digits-*/1")):
        metadata = ModelMetadata.read(directory)
        metrics = metadata.metrics
        widths = [metadata.input_dim, *metadata.training["hidden"], metadata.latent_dim]
        cells = [metadata.variant, "-".join(str(w) for w in widths)]
        for _, key in COLUMNS[1:]:
            value = metrics.get(key)
            cells.append("" if value is None else f"{value:.3g}")
        rates = realised_rates(directory, metadata)
        cells.append(", ".join(f"{s} {100 * r:.2f}%" for s, r in rates.items()))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    args = parser.parse_args(argv)
    lines = table(args.models)
    if len(lines) == 2:
        print(f"error: no digits-*/1 versions under {args.models}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
