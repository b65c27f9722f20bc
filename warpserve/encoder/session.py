"""Encoder backends: one forward pass over a padded batch, ONNX Runtime or PyTorch.

Both take the arrays from `tokens.collate` and return float32 [B, D]: pooled embeddings
(unnormalized) or logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from warpserve.encoder.models import EncoderSpec


class EncoderBackend(Protocol):
    name: str  # the variant it runs

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


class OrtBackend:
    def __init__(
        self,
        path: Path,
        name: str,
        num_threads: int = 2,
        disabled_optimizers: tuple[str, ...] = (),
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        # one graph, one stream of batches: a second inter-op pool would only contend
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        self.name = name

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: v for k, v in inputs.items() if k in self._input_names}
        return np.asarray(self._session.run(None, feed)[0], dtype=np.float32)


class TorchBackend:
    """The fp32 reference, and the fallback when ONNX Runtime cannot be used."""

    def __init__(self, spec: EncoderSpec, name: str = "torch-fp32", num_threads: int = 2) -> None:
        import torch

        from warpserve.encoder.models import load_torch_encoder

        self._torch = torch
        self._num_threads = num_threads
        self._module = load_torch_encoder(spec)
        self.name = name

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        torch.set_num_threads(self._num_threads)
        tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}
        with torch.inference_mode():
            return self._module(**tensors).float().numpy()
