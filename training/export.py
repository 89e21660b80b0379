"""ONNX export of a trained model (normalisation baked in), checked against ONNX Runtime, with file hashes.

Three graphs per model version, tensor names and shapes as in `service.contract`, the batch axis dynamic:

- encoder.onnx: x (batch, *input_shape) -> latent (batch, latent_dim) [, log_var (batch, latent_dim)]
- decoder.onnx: latent (batch, latent_dim) -> reconstruction (batch, *input_shape)
- model.onnx:   x -> latent [, log_var], reconstruction (batch, *input_shape),
  feature_errors (batch, *input_shape), error (batch,) [, neg_elbo (batch,)]

Each graph is checked against torch on held-out samples of a batch size the export did not trace, per value in
the normalised space: raw outputs are compared after dividing by the scale, so that a feature in the tens of
thousands is held to the same 1e-5 as one in [0, 1], and not failed by the float32 rounding of its raw value.
"""

from __future__ import annotations

import hashlib
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import Tensor, nn

from service.contract import SCORE_OUTPUTS, GraphFile, GraphRole, ScoreName
from training.data import Array, Normaliser
from training.memory import COMBINED_SCORE, KNN_SCORE, ScoredModel
from training.objectives import Autoencoder

__all__ = ["OPSET", "ExportError", "GraphSpec", "export_graphs", "graph_modules", "score_output", "sha256"]

OPSET = 17
# Parity tolerance between ONNX Runtime and torch per value in the normalised space, relative to the value's
# magnitude where that exceeds 1.
PARITY_ATOL = 1e-5
# Outputs in raw units; every other output is in the normalised space already.
RAW_OUTPUTS = frozenset({"reconstruction"})

Model = Autoencoder | ScoredModel
"""What is exported: a variant, or a variant with scores composed around it (`training.memory`)."""


def score_output(score: ScoreName) -> str:
    """The fused graph's output that carries `score`: the well-known name (`mse` -> `error`), else its own."""
    return SCORE_OUTPUTS.get(score, score)


class ExportError(RuntimeError):
    """The exported graph does not reproduce torch's outputs."""


class _Normalised(nn.Module):
    def __init__(self, model: Model, normaliser: Normaliser) -> None:
        super().__init__()
        self.model = model
        # Broadcast over a sample: (features,), (1, channels) or (channels, 1, 1).
        self.register_buffer("offset", torch.from_numpy(normaliser.offset.copy()))
        self.register_buffer("scale", torch.from_numpy(normaliser.scale.copy()))
        self.offset: Tensor
        self.scale: Tensor
        # Series with centred channels: (1, channels) each (`training.data.Normaliser`).
        self.centring = normaliser.centred is not None and normaliser.level is not None
        if self.centring:
            assert normaliser.centred is not None and normaliser.level is not None
            self.register_buffer("centred", torch.from_numpy(normaliser.centred.copy()))
            self.register_buffer("level", torch.from_numpy(normaliser.level.copy()))
        self.centred: Tensor
        self.level: Tensor

    def normalise(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(normalised samples, the shift centring subtracted (batch, 1, channels), or None)."""
        affine = (x - self.offset) / self.scale  # (batch, *input_shape)
        if not self.centring:
            return affine, None
        shift = self.centred * (affine.mean(dim=1, keepdim=True) - self.level)  # (batch, 1, channels)
        return affine - shift, shift


class EncoderGraph(_Normalised):
    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.model.encode_outputs(self.normalise(x)[0])  # each (batch, latent_dim)


class DecoderGraph(_Normalised):
    def forward(self, latent: Tensor) -> Tensor:
        return self.model.decode(latent) * self.scale + self.offset  # (batch, *input_shape)


class FusedGraph(_Normalised):
    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        normalised, shift = self.normalise(x)  # (batch, *input_shape)
        codes = self.model.encode_outputs(normalised)
        reconstruction = self.model.decode(codes[0])  # (batch, *input_shape), decoded from the mean code
        feature_errors = (reconstruction - normalised) ** 2  # (batch, *input_shape)
        error = feature_errors.mean(dim=tuple(range(1, feature_errors.ndim)))  # (batch,)
        extra = self.model.extra_scores(normalised, codes, reconstruction)
        raw = (reconstruction if shift is None else reconstruction + shift) * self.scale + self.offset
        return (*codes, raw, feature_errors, error, *extra)


@dataclass(frozen=True)
class GraphSpec:
    role: GraphRole
    module: nn.Module
    inputs: list[str]
    outputs: list[str]


def graph_modules(model: Model, normaliser: Normaliser) -> list[GraphSpec]:
    """The graphs of a model as torch modules taking and giving raw units: encoder, decoder, the fused
    model and, when scores are composed around the model (a memory bank), `core`: the fused graph of the
    model alone. ONNX Runtime runs every node of a graph whatever outputs are fetched, so a request for the
    reconstruction or the mse would otherwise pay for the bank's distances."""
    codes = list(model.encoder_outputs)

    def fused(m: Model) -> list[str]:
        # `error` (the mse score) and then each extra score, in `scores` order.
        return [*codes, "reconstruction", "feature_errors", *(score_output(s) for s in m.scores)]

    specs = [
        GraphSpec("encoder", EncoderGraph(model, normaliser).eval(), ["x"], codes),
        GraphSpec("decoder", DecoderGraph(model, normaliser).eval(), ["latent"], ["reconstruction"]),
        GraphSpec("model", FusedGraph(model, normaliser).eval(), ["x"], fused(model)),
    ]
    if isinstance(model, ScoredModel) and model.scores != model.model.scores:
        specs.append(GraphSpec("core", FusedGraph(model.model, normaliser).eval(), ["x"], fused(model.model)))
    return specs


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export_one(spec: GraphSpec, example: Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            spec.module,
            (example,),
            str(path),
            input_names=spec.inputs,
            output_names=spec.outputs,
            opset_version=OPSET,
            dynamo=False,
            dynamic_axes={name: {0: "batch"} for name in spec.inputs + spec.outputs},
        )
    # Offline optimisation at the basic level only: constant folding and redundant-node removal are the same
    # for every execution provider, so the saved graph stays loadable by the CPU and CUDA providers alike.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        optimised = Path(tmp) / path.name
        options.optimized_model_filepath = str(optimised)
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimised))
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def _log_unit(spec: GraphSpec) -> float:
    """How many log-score units one unit of the combined score is: its smallest spread."""
    scored = getattr(spec.module, "model", None)
    combination = scored.combination if isinstance(scored, ScoredModel) else None
    return 1.0 if combination is None else float(combination.spread.min())


def _outputs(spec: GraphSpec, x: Tensor) -> list[Tensor]:
    with torch.no_grad():
        out = spec.module(x)
    return [out] if isinstance(out, Tensor) else list(out)


def _input_rounding(
    spec: GraphSpec, probe: Tensor, normaliser: Normaliser, expected: list[Tensor]
) -> list[Any]:
    """Per output, how far it moves when every input value moves by one float32 spacing of what the graph
    computes with: the normalised value for raw inputs, the code itself for the decoder. The two runtimes may
    differ by that from rounding alone: an outlier 100 scales from the mean is only good to 8e-6 there, and a
    network that reads it closely carries that into every output."""
    raw = probe.numpy().astype(np.float64)
    if spec.inputs[0] != "x":
        step = np.spacing(np.abs(raw).astype(np.float32)).astype(np.float64)
    elif normaliser.centred is None:
        normalised = np.abs(normaliser.transform(probe.numpy()))
        step = np.spacing(normalised.astype(np.float32)).astype(np.float64) * normaliser.scale
    else:  # a window's level is set aside first: its values are not the normalised ones
        return [np.zeros(()) for _ in expected]
    nudged = torch.from_numpy((raw + step).astype(np.float32))
    return [
        np.abs(n.numpy().astype(np.float64) - e.numpy().astype(np.float64))
        for n, e in zip(_outputs(spec, nudged), expected, strict=True)
    ]


def _bank_rounding(
    spec: GraphSpec, probe: Tensor, normaliser: Normaliser, expected: list[Tensor], allowed: list[Any]
) -> None:
    """Widen `allowed` for the bank's scores. A squared distance is |x|^2 - 2 x.b + |b|^2, good to a float64
    spacing of its terms, so a duplicate of a bank row sits at a distance of about the square root of that
    (1e-7) rather than 0, differently in each runtime; the combined score's logs magnify its parts' roundings
    where a part is near 0 (a duplicate's distance, a row reconstructed almost exactly)."""
    scored = getattr(spec.module, "model", None)
    if not isinstance(scored, ScoredModel) or scored.memory is None or KNN_SCORE not in spec.outputs:
        return
    rows = normaliser.transform(probe.numpy()).reshape(len(probe), -1).astype(np.float64)
    terms = (rows**2).sum(axis=1) + float(scored.memory.bank_sq.max())
    distance = np.sqrt(8 * np.spacing(terms))  # (n,)
    at = spec.outputs.index(KNN_SCORE)
    allowed[at] = np.maximum(allowed[at], distance)
    if scored.combination is None or COMBINED_SCORE not in spec.outputs:
        return
    # The combined score is a function of the others: it may differ by what their own allowed differences
    # (PARITY_ATOL and the roundings above) carry through it. Each of its terms rises with its score, so all
    # of them moved one way bound it.
    names = [score_output(s) for s in scored.scores[:-1]]
    parts = [expected[spec.outputs.index(n)].double() for n in names]
    slack = [
        torch.from_numpy(
            PARITY_ATOL * np.maximum(1.0, np.abs(p.numpy())) + np.asarray(allowed[spec.outputs.index(n)])
        )
        for p, n in zip(parts, names, strict=True)
    ]
    at = spec.outputs.index(COMBINED_SCORE)
    with torch.no_grad():
        centre = scored.combination([p.float() for p in parts])
        for sign in (1, -1):  # the other runtime's scores may be either side of these
            nudged = [(p + sign * d).clamp(min=0.0).float() for p, d in zip(parts, slack, strict=True)]
            moved = (scored.combination(nudged) - centre).abs().double().numpy()
            allowed[at] = np.maximum(allowed[at], moved)


def check_parity(spec: GraphSpec, path: Path, probe: Tensor, normaliser: Normaliser) -> float:
    """Largest difference between ONNX Runtime and torch on `probe`, per value in the normalised space,
    relative to the value where it exceeds 1, beyond one float32 spacing of a raw value and beyond what
    rounding moves it (one float32 spacing of the input, a bank distance's float64 spacing, and what those
    carry into the combined score); raises ExportError beyond PARITY_ATOL."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(spec.outputs, {spec.inputs[0]: probe.numpy()})
    expected_list = _outputs(spec, probe)
    allowed = _input_rounding(spec, probe, normaliser, expected_list)
    _bank_rounding(spec, probe, normaliser, expected_list, allowed)
    worst = 0.0
    for name, a, b, moved in zip(spec.outputs, got, expected_list, allowed, strict=True):
        ref = b.numpy().astype(np.float64)
        # Beyond what rounding alone moves it (in the output's own units).
        diff = np.maximum(np.abs(np.asarray(a, np.float64) - ref) - moved, 0.0)
        # A raw float32 is only as precise as its spacing, which the scale may not dwarf (1e6 +- 1e-3).
        rounding = np.zeros_like(ref)
        if name in RAW_OUTPUTS:
            spacing = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
            diff, rounding = diff / normaliser.scale, spacing / normaliser.scale
            ref = (ref - normaliser.offset) / normaliser.scale
        magnitude = np.maximum(1.0, np.abs(ref))
        if name == COMBINED_SCORE:
            # A mean of log scores over their spreads: compared in log-score units, as the scores it
            # combines are (a float32 difference of 1e-6 in a log, over a spread of 0.05, is 2e-5 here).
            diff, rounding = diff * _log_unit(spec), rounding * _log_unit(spec)
            magnitude = np.maximum(1.0, np.abs(ref) * _log_unit(spec))
        error = np.maximum(diff - rounding, 0.0) / magnitude  # (n, ...) per value
        if error.size and float(error.max()) > PARITY_ATOL:
            at = np.unravel_index(int(np.argmax(error)), error.shape)
            raise ExportError(
                f"{path.name}: output {name!r} differs from torch by {float(diff[at]):.3g} in the normalised "
                f"space at {tuple(int(i) for i in at)}, expected at most {PARITY_ATOL:g}"
            )
        worst = max(worst, float(error.max()) if error.size else 0.0)
    return worst


def export_graphs(
    model: Model, normaliser: Normaliser, directory: Path, probe: Array
) -> tuple[dict[GraphRole, GraphFile], float]:
    """Write encoder.onnx, decoder.onnx, model.onnx (and core.onnx) into `directory`, check each against
    ONNX Runtime on `probe` samples (raw units, (n, *input_shape), n > 2), and return their metadata entries
    and the worst parity error (normalised space, see `check_parity`)."""
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(probe, dtype=np.float32))  # (n, *input_shape)
    with torch.no_grad():
        latent = model.encode(torch.from_numpy(normaliser.transform(probe)))  # (n, latent_dim)
    graphs: dict[GraphRole, GraphFile] = {}
    worst = 0.0
    for spec in graph_modules(model, normaliser):
        example = latent if spec.role == "decoder" else x
        path = directory / f"{spec.role}.onnx"
        # Traced on two samples, checked on all of them: a batch axis frozen at export would fail the check.
        _export_one(spec, example[:2], path)
        worst = max(worst, check_parity(spec, path, example, normaliser))
        graphs[spec.role] = GraphFile(
            path=path.name, sha256=sha256(path), inputs=spec.inputs, outputs=spec.outputs
        )
    return graphs, worst
