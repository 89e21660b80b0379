"""ONNX Runtime in-process: how many samples per second the model itself gives, with the service's session
options (one intra-op thread per session), on one thread or one session per thread on several."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

__all__ = ["in_process_samples_per_s", "session"]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def in_process_samples_per_s(path: Path, x: np.ndarray, seconds: float, threads: int = 1) -> float:
    """Samples/s running the `reconstruction` output on `x` (batch, input_dim) for `seconds`, `threads`
    at once (ONNX Runtime releases the GIL while it runs, so threads stand for worker processes)."""
    sessions = [session(path) for _ in range(threads)]
    name = sessions[0].get_inputs()[0].name
    for s in sessions:
        s.run(["reconstruction"], {name: x})
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        s, n = sessions[i], 0
        while time.perf_counter() < stop:
            s.run(["reconstruction"], {name: x})
            n += 1
        counts[i] = n

    start = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return float(sum(counts) * x.shape[0] / (time.perf_counter() - start))
