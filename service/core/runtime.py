"""OnnxModel: one model version's ONNX Runtime sessions, numpy in and numpy out. No web framework here.

Loading checks each graph file's sha256 against the metadata, that the graphs' tensors match the metadata
(names, feature and latent sizes), records the providers each session really got (ONNX Runtime falls back to
CPU silently), and can warm every graph up with one run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.contract import GraphRole, ModelMetadata, ScoreName
from service.errors import InvalidInputError, NotGenerativeError

__all__ = ["Encoded", "Float32Array", "ModelLoadError", "OnnxModel", "Scored", "default_providers"]

Float32Array = npt.NDArray[np.float32]

_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class ModelLoadError(Exception):
    """A model version could not be loaded; the message says which file or check and why."""


def default_providers() -> list[str]:
    """CUDA when this ONNX Runtime build sees a GPU, else CPU."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class Encoded:
    latent: Float32Array
    """(batch, latent_dim); the mean for the VAE."""
    log_var: Float32Array | None
    """(batch, latent_dim) for the VAE, else None."""


@dataclass(frozen=True)
class Scored:
    errors: Float32Array
    """(batch,) the chosen score per sample."""
    feature_errors: Float32Array | None
    """(batch, *sample_shape) squared error per value in the normalised space, when asked for."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class OnnxModel:
    """The encoder, decoder and fused model graphs of one model version (and `core`, the fused graph without
    the memory bank, where the version has one)."""

    def __init__(
        self,
        directory: Path,
        metadata: ModelMetadata,
        *,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 1,
        inter_op_threads: int = 1,
    ) -> None:
        self.directory = directory
        self.metadata = metadata
        self.requested_providers = list(providers) if providers else default_providers()
        self.input_dim = metadata.input_dim
        self.sample_shape: tuple[int, ...] = tuple(metadata.sample_shape)
        """One sample's shape as the graphs take it, after the batch axis."""
        self.latent_dim = metadata.latent_dim
        self.warmed = False
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._sessions: dict[GraphRole, ort.InferenceSession] = {}
        for role, graph in metadata.graphs.items():
            path = directory / graph.path
            if not path.is_file():
                raise ModelLoadError(f"{role} graph {graph.path} is missing from {directory}")
            actual = _sha256(path)
            if actual != graph.sha256:
                raise ModelLoadError(
                    f"{role} graph {graph.path} has sha256 {actual}, metadata expects {graph.sha256}"
                )
            try:
                session = ort.InferenceSession(
                    str(path), sess_options=options, providers=self.requested_providers
                )
            except Exception as exc:  # ORT raises several unrelated exception types for unreadable graphs
                raise ModelLoadError(
                    f"{role} graph {graph.path} does not load in ONNX Runtime: {exc}"
                ) from exc
            self._check_graph(role, session)
            self._sessions[role] = session
        self.providers: dict[GraphRole, list[str]] = {r: s.get_providers() for r, s in self._sessions.items()}
        self._check_providers()
        self.has_log_var = "log_var" in metadata.graphs["encoder"].outputs
        self._encoder_in = metadata.graphs["encoder"].inputs[0]
        self._decoder_in = metadata.graphs["decoder"].inputs[0]
        self._model_in = metadata.graphs["model"].inputs[0]
        self._encoder_out = ["latent", "log_var"] if self.has_log_var else ["latent"]
        self._model_outputs = [o.name for o in self._sessions["model"].get_outputs()]
        core = self._sessions.get("core")
        self._core_outputs = frozenset(o.name for o in core.get_outputs()) if core else frozenset()

    @classmethod
    def load(cls, directory: Path, **kwargs: object) -> OnnxModel:
        """Read `directory/metadata.json` and load its graphs."""
        try:
            metadata = ModelMetadata.read(directory)
        except Exception as exc:  # pydantic ValidationError, OSError, JSON errors
            raise ModelLoadError(f"invalid metadata.json in {directory}: {exc}") from exc
        return cls(directory, metadata, **kwargs)  # type: ignore[arg-type]

    # --- load-time checks ---------------------------------------------------------------------------------

    def _check_graph(self, role: GraphRole, session: ort.InferenceSession) -> None:
        graph = self.metadata.graphs[role]
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if inputs != graph.inputs:
            raise ModelLoadError(f"{role} graph inputs are {inputs}, metadata says {graph.inputs}")
        missing = [o for o in graph.outputs if o not in outputs]
        if missing:
            raise ModelLoadError(
                f"{role} graph lacks outputs {missing} that metadata lists ({outputs} present)"
            )
        required = {
            "encoder": ["latent"],
            "decoder": ["reconstruction"],
            "model": ["latent", "reconstruction", "feature_errors", "error"],
            "core": ["latent", "reconstruction", "feature_errors", "error"],
        }[role] + [self.metadata.score_output(s) for s in self.metadata.scores if role == "model"]
        lacking = [o for o in required if o not in outputs]
        if lacking:
            raise ModelLoadError(f"{role} graph lacks required outputs {lacking} ({outputs} present)")
        expected = (self.latent_dim,) if role == "decoder" else self.sample_shape
        shape = session.get_inputs()[0].shape
        fixed = [d if isinstance(d, int) else None for d in shape[1:]]
        if len(shape) != 1 + len(expected) or any(
            f is not None and f != e for f, e in zip(fixed, expected, strict=False)
        ):
            dims = ", ".join(str(d) for d in expected)
            raise ModelLoadError(
                f"{role} graph input {inputs[0]} has shape {shape}, metadata expects (batch, {dims})"
            )

    def _check_providers(self) -> None:
        wanted_gpu = [p for p in self.requested_providers if p in _GPU_PROVIDERS]
        for role, got in self.providers.items():
            missing = [p for p in wanted_gpu if p not in got]
            if missing:
                raise ModelLoadError(
                    f"AE_PROVIDERS asks for {missing} but the {role} session got only {got} "
                    f"(available in this ONNX Runtime build: {ort.get_available_providers()})"
                )

    def warm_up(self) -> None:
        """Run every graph once on zeros and check the answers' shapes against the metadata."""
        x = np.zeros((1, *self.sample_shape), dtype=np.float32)
        encoded = self.encode(x)
        recon = self.decode(encoded.latent)
        outputs = self.run_model(x)
        sample = (1, *self.sample_shape)
        checks = [
            ("encoder latent", encoded.latent.shape, (1, self.latent_dim)),
            ("decoder reconstruction", recon.shape, sample),
            ("model reconstruction", outputs["reconstruction"].shape, sample),
            ("model feature_errors", outputs["feature_errors"].shape, sample),
            ("model error", outputs["error"].shape, (1,)),
        ]
        checks += [
            (f"model {self.metadata.score_output(s)}", outputs[self.metadata.score_output(s)].shape, (1,))
            for s in self.metadata.scores
        ]
        for what, got, want in checks:
            if tuple(got) != want:
                raise ModelLoadError(f"warm-up: {what} has shape {tuple(got)}, metadata implies {want}")
        if self._core_outputs:
            core = self.run_model(x, ["error"])["error"]
            if not np.allclose(core, outputs["error"], rtol=1e-4, atol=1e-6):
                raise ModelLoadError(
                    f"warm-up: the core graph's error {core.tolist()} differs from the model graph's "
                    f"{outputs['error'].tolist()}; they must be the same model"
                )
        self.warmed = True

    # --- inference ----------------------------------------------------------------------------------------

    def _check(self, x: Float32Array, shape: tuple[int, ...], what: str) -> None:
        if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != shape:
            dims = ", ".join(str(d) for d in shape)
            raise InvalidInputError(
                f"{what} must have shape (batch, {dims}) for model {self.metadata.name} "
                f"version {self.metadata.version}, got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise InvalidInputError(f"{what} is an empty batch; expected at least one row")

    def encode(self, x: Float32Array) -> Encoded:
        """x (batch, *sample_shape) raw values -> latent (batch, latent_dim) [+ log_var]."""
        self._check(x, self.sample_shape, "inputs")
        out = self._sessions["encoder"].run(self._encoder_out, {self._encoder_in: x})
        return Encoded(out[0], out[1] if self.has_log_var else None)

    def decode(self, z: Float32Array) -> Float32Array:
        """z (batch, latent_dim) -> reconstruction (batch, *sample_shape) in raw units."""
        self._check(z, (self.latent_dim,), "latents")
        result: Float32Array = self._sessions["decoder"].run(["reconstruction"], {self._decoder_in: z})[0]
        return result

    def denoise(self, x: Float32Array) -> Float32Array:
        """x (batch, *sample_shape) -> reconstruction, same shape; for the VAE the decoded mean."""
        self._check(x, self.sample_shape, "inputs")
        result: Float32Array = self._fused(["reconstruction"]).run(["reconstruction"], {self._model_in: x})[0]
        return result

    def score(self, x: Float32Array, score: ScoreName | None = None, per_feature: bool = False) -> Scored:
        """x (batch, *sample_shape) -> per-sample `score` (default the model's) from the fused graph."""
        self._check(x, self.sample_shape, "inputs")
        name = score or self.metadata.default_score
        if name not in self.metadata.scores:
            raise InvalidInputError(
                f"model {self.metadata.name} has no score {name!r}; expected one of {self.metadata.scores}"
            )
        wanted = [self.metadata.score_output(name)] + (["feature_errors"] if per_feature else [])
        out = self._fused(wanted).run(wanted, {self._model_in: x})
        return Scored(out[0], out[1] if per_feature else None)

    @property
    def encoder_outputs(self) -> list[str]:
        """The encoder graph's outputs: latent [, log_var]."""
        return list(self._encoder_out)

    @property
    def model_outputs(self) -> list[str]:
        """The fused graph's outputs, in graph order."""
        return list(self._model_outputs)

    def run_model(self, x: Float32Array, outputs: Sequence[str] | None = None) -> dict[str, Float32Array]:
        """x (batch, *sample_shape) -> the fused graph's `outputs` (default all) by name, from `core` when it
        has them all."""
        self._check(x, self.sample_shape, "inputs")
        names = list(outputs) if outputs is not None else self._model_outputs
        return dict(zip(names, self._fused(names).run(names, {self._model_in: x}), strict=True))

    def _fused(self, outputs: Sequence[str]) -> ort.InferenceSession:
        """The cheapest fused graph with every one of `outputs`: `core` (no memory bank) when it has them all.
        ONNX Runtime runs all of a graph's nodes whatever is fetched, so the bank's distances cost every
        request that runs the full graph."""
        if self._core_outputs and self._core_outputs.issuperset(outputs):
            return self._sessions["core"]
        return self._sessions["model"]

    def sample(self, n: int, seed: int | None = None) -> Float32Array:
        """Decode n draws of z ~ N(0, I); the same seed gives the same samples. Generative models only."""
        if not self.metadata.generative:
            raise NotGenerativeError(
                f"model {self.metadata.name} (variant {self.metadata.variant}) cannot generate samples; "
                "expected a generative model such as a vae"
            )
        if n < 1:
            raise InvalidInputError(f"n must be at least 1, got {n}")
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.latent_dim), dtype=np.float32)  # (n, latent_dim)
        return self.decode(z)
