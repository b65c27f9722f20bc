"""Encoder backends: one forward pass over a padded batch, ONNX Runtime or PyTorch.

Both take the arrays from `tokens.collate` and return float32 [B, D]: pooled embeddings
(unnormalized) or logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from warpserve.encoder.models import EncoderSpec


class EncoderBackend(Protocol):
    name: str  # the variant it runs
    is_thread_safe: bool  # run() may be called from several threads at once

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


@dataclass(frozen=True)
class OrtSettings:
    num_threads: int = 2  # intra-op threads of the main session
    disabled_optimizers: tuple[str, ...] = ()  # ORT fusions this graph must not get
    # batches of at most this many padded tokens go to a second, single-threaded session:
    # for one short text the split GEMMs save less than the per-op thread hand-offs cost,
    # and on a shared CPU a descheduled pool thread stalls every op (0: no second session)
    small_batch_tokens: int = 256
    # idle pool threads spin for work; on a CPU shared with other processes that burns
    # the time our other thread needs, so it is off unless the machine is ours
    allow_spinning: bool = False


class OrtBackend:
    def __init__(self, path: Path, name: str, settings: OrtSettings = OrtSettings()) -> None:
        self._session = _open_session(path, settings, settings.num_threads)
        self._small = None
        if settings.num_threads > 1 and settings.small_batch_tokens > 0:
            self._small = _open_session(path, settings, 1)
        self._small_batch_tokens = settings.small_batch_tokens
        self._input_names = {i.name for i in self._session.get_inputs()}
        self.name = name
        self.is_thread_safe = True  # InferenceSession.run is, and releases the GIL

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: v for k, v in inputs.items() if k in self._input_names}
        session = self._session
        if self._small is not None and feed["input_ids"].size <= self._small_batch_tokens:
            session = self._small
        return np.asarray(session.run(None, feed)[0], dtype=np.float32)


def _open_session(path: Path, settings: OrtSettings, num_threads: int):  # noqa: ANN202
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    # one graph, one stream of batches: a second inter-op pool would only contend
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spinning = "1" if settings.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return ort.InferenceSession(
        str(path),
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(settings.disabled_optimizers),
    )


class TorchBackend:
    """The fp32 reference, and the fallback when ONNX Runtime cannot be used."""

    def __init__(self, spec: EncoderSpec, name: str = "torch-fp32", num_threads: int = 2) -> None:
        import torch

        from warpserve.encoder.models import load_torch_encoder

        self._torch = torch
        self._num_threads = num_threads
        self._module = load_torch_encoder(spec)
        self.name = name
        self.is_thread_safe = False  # set_num_threads is process-wide: one caller at a time

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        torch.set_num_threads(self._num_threads)
        tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
        with torch.inference_mode():
            return self._module(**tensors).float().numpy()
