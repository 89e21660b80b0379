"""What the core graph saves: ONNX Runtime time of `error` alone from `core.onnx` and from `model.onnx` (which
also computes the memory bank's distances, since ONNX Runtime runs every node whatever is fetched).

    python -m bench.core_graph [--model models/digits-plain/1]

One intra-op and inter-op thread, best of 7 runs of 200 calls, batch 1 and 64, uniform random raw inputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract import ModelMetadata


def best_ms(session: ort.InferenceSession, name: str, x: np.ndarray) -> float:
    for _ in range(50):
        session.run(["error"], {name: x})
    best = float("inf")
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(200):
            session.run(["error"], {name: x})
        best = min(best, (time.perf_counter() - start) / 200 * 1e3)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/digits-plain/1"))
    args = parser.parse_args(argv)
    metadata = ModelMetadata.read(args.model)
    if "core" not in metadata.graphs:
        print(f"error: {args.model} has no core graph (it has no memory bank)", file=sys.stderr)
        return 2
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    x = np.random.default_rng(0).uniform(0, 16, (64, *metadata.input_shape)).astype(np.float32)
    print("| graph | batch 1 ms | batch 64 ms |\n|---|---|---|")
    for role in ("core", "model"):
        graph = metadata.graphs[role]
        path = str(args.model / graph.path)
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        b1, b64 = (best_ms(session, graph.inputs[0], x[:n]) for n in (1, 64))
        print(f"| {graph.path} | {b1:.3f} | {b64:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
