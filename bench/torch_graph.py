"""Run an exported ONNX graph's weights in torch eager, node by node: the naive baseline's model.

A user with a trained torch model would call it directly; the shipped repository keeps only ONNX files, so the
baseline rebuilds the same computation from the graph's initialisers with torch operators. Only the nodes the
requested output depends on run (the fused graph also computes errors the baseline does not answer).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor

__all__ = ["TorchGraph"]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _gemm(ins: list[Tensor], a: dict[str, Any]) -> Tensor:
    x, w = ins[0], ins[1]
    if a.get("transA", 0):
        x = x.t()
    if a.get("transB", 0):
        w = w.t()
    y: Tensor = a.get("alpha", 1.0) * (x @ w)
    if len(ins) > 2:
        y = y + a.get("beta", 1.0) * ins[2]
    return y


def _reduce(fn: Callable[..., Tensor]) -> Callable[[list[Tensor], dict[str, Any]], Tensor]:
    def run(ins: list[Tensor], a: dict[str, Any]) -> Tensor:
        axes = a.get("axes") or (ins[1].tolist() if len(ins) > 1 else None)
        keep = bool(a.get("keepdims", 1))
        if axes is None:
            return fn(ins[0]) if not keep else fn(ins[0]).reshape([1] * ins[0].dim())
        return fn(ins[0], dim=list(axes), keepdim=keep)

    return run


def _slice(ins: list[Tensor], a: dict[str, Any]) -> Tensor:
    x = ins[0]
    starts, ends = ins[1].reshape(-1).tolist(), ins[2].reshape(-1).tolist()
    axes = ins[3].reshape(-1).tolist() if len(ins) > 3 else list(range(len(starts)))
    steps = ins[4].reshape(-1).tolist() if len(ins) > 4 else [1] * len(starts)
    index: list[slice] = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        index[ax] = slice(s, min(e, x.shape[ax]), st)
    return x[tuple(index)]


_OPS: dict[str, Callable[[list[Tensor], dict[str, Any]], Tensor]] = {
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: (
        i[0] / i[1] if i[0].is_floating_point() else torch.div(i[0], i[1], rounding_mode="trunc")
    ),
    "Pow": lambda i, a: i[0] ** i[1],
    "Exp": lambda i, a: torch.exp(i[0]),
    "Relu": lambda i, a: torch.relu(i[0]),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]),
    "Elu": lambda i, a: torch.nn.functional.elu(i[0], alpha=a.get("alpha", 1.0)),
    "Gemm": _gemm,
    "MatMul": lambda i, a: i[0] @ i[1],
    "ReduceMean": _reduce(torch.mean),
    "ReduceSum": _reduce(torch.sum),
    "Shape": lambda i, a: torch.tensor(i[0].shape, dtype=torch.int64),
    "Gather": lambda i, a: torch.index_select(i[0], a.get("axis", 0), i[1].reshape(-1)).reshape(
        i[1].shape if i[1].dim() else ()
    ),
    "Slice": _slice,
    "Identity": lambda i, a: i[0],
}


class TorchGraph(torch.nn.Module):
    """One output of an ONNX graph, computed in torch eager from the graph's weights."""

    def __init__(self, path: Path, output: str) -> None:
        super().__init__()
        graph = onnx.load(str(path)).graph
        self.input_name = graph.input[0].name
        self.output = output
        self.weights = {
            t.name: torch.from_numpy(np.array(numpy_helper.to_array(t))) for t in graph.initializer
        }
        for node in graph.node:
            if node.op_type == "Constant":
                self.weights[node.output[0]] = torch.from_numpy(
                    np.array(numpy_helper.to_array(_attrs(node)["value"]))
                )
        producers = {o: n for n in graph.node if n.op_type != "Constant" for o in n.output}
        needed: list[onnx.NodeProto] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            node = producers.get(name)
            if node is None or node.name + node.output[0] in seen:
                return
            seen.add(node.name + node.output[0])
            for i in node.input:
                visit(i)
            needed.append(node)

        visit(output)
        unsupported = sorted({n.op_type for n in needed} - set(_OPS))
        if unsupported:
            raise ValueError(f"{path.name}: operators {unsupported} are not supported by the torch baseline")
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in needed]

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Tensor] = dict(self.weights)
        values[self.input_name] = x
        for op, inputs, outputs, attrs in self.nodes:
            values[outputs[0]] = _OPS[op]([values[i] for i in inputs if i], attrs)
        return values[self.output]
