"""A GGUF file as a `ModelSource`: HF config, HF-named float32 tensors, raw quantized blocks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType

from warpserve.config import cache_dir as default_cache_dir
from warpserve.tokenization.gguf_convert import load_gguf_tokenizer
from warpserve.tokenization.tokenizer import Tokenizer
from warpserve.weights import gguf_model
from warpserve.weights.dequant import FLOAT_TYPES, SUPPORTED_TYPES, dequantize
from warpserve.weights.gguf_file import GGUFFile, GGUFTensorInfo, read_gguf
from warpserve.weights.source import ModelSource


@dataclass(frozen=True)
class RawTensor:
    """One tensor as stored: ggml blocks, rows already in HF order (Q/K un-permuted)."""

    name: str  # HF parameter name
    ggml_type: GGMLQuantizationType
    data: np.ndarray  # uint8 [rows, bytes_per_row] ([num_bytes] for 1-D tensors)
    shape: tuple[int, ...]  # the logical (dequantized) shape, e.g. [out_features, in_features]


@dataclass
class GGUFSource(ModelSource):
    gguf: GGUFFile | None = field(default=None, repr=False)
    plans: dict[str, gguf_model.TensorPlan] = field(default_factory=dict, repr=False)

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for info, plan in self._planned():
            values = dequantize(self._file.raw_bytes(info), info.ggml_type, info.shape, info.name)
            yield plan.hf_name, torch.from_numpy(_in_hf_row_order(values, info, plan))

    def iter_raw_tensors(self) -> Iterator[RawTensor]:
        """The quantized blocks themselves, for kernels that compute on them directly."""
        for info, plan in self._planned():
            data = self._file.raw_bytes(info)
            if len(info.shape) >= 2:
                data = data.reshape(info.shape[0], -1)
            yield RawTensor(
                plan.hf_name, info.ggml_type, _in_hf_row_order(data, info, plan), info.shape
            )

    def load_tokenizer(self, cache_dir: Path | None = None) -> Tokenizer:
        root = (cache_dir or default_cache_dir()) / "tokenizers"
        hf = load_gguf_tokenizer(self.path, root)
        return Tokenizer(hf, self.generation_config, self.max_position_embeddings, str(self.path))

    @property
    def _file(self) -> GGUFFile:
        assert self.gguf is not None, "GGUFSource is built by open_gguf"
        return self.gguf

    def _planned(self) -> Iterator[tuple[GGUFTensorInfo, gguf_model.TensorPlan]]:
        for info in self._file.tensors:
            yield info, self.plans[info.name]


def _in_hf_row_order(
    array: np.ndarray, info: GGUFTensorInfo, plan: gguf_model.TensorPlan
) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation on values or on raw rows (a row is whole blocks)."""
    if plan.num_permute_heads is None:
        return array
    if len(info.shape) < 2 and info.ggml_type not in FLOAT_TYPES:
        raise ValueError(
            f"tensor {info.name!r}: a block-quantized 1-D tensor cannot be un-permuted"
        )
    order = gguf_model.unpermute_row_order(info.shape[0], plan.num_permute_heads)
    return array.reshape(info.shape[0], -1)[order].reshape(array.shape)


def open_gguf(path: Path) -> GGUFSource:
    """Parse the header and check every tensor can be named and dequantized, reading no data."""
    file = read_gguf(path)
    architecture = gguf_model.check_architecture(file.metadata, path)
    config = gguf_model.build_config(file.metadata, {t.name for t in file.tensors}, path)
    plans = {}
    for info in file.tensors:
        if info.ggml_type not in SUPPORTED_TYPES:
            supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
            raise ValueError(
                f"GGUF file {path}: tensor {info.name!r} is stored as {info.ggml_type.name}, "
                f"which warpserve cannot dequantize (supported: {supported})"
            )
        try:
            plans[info.name] = gguf_model.plan_tensor(info.name, architecture, config)
        except ValueError as exc:
            raise ValueError(f"GGUF file {path}: {exc}") from None
    generation = gguf_model.generation_config(file.metadata)
    return GGUFSource(path, "gguf", config, generation, gguf=file, plans=plans)
