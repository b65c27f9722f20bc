"""`ModelSource`: a model on disk, as config + named float32 tensors + tokenizer.

The boundary between file formats and the rest of warpserve: model classes see HF parameter
names and float32 tensors whatever the file held (safetensors shards or a quantized GGUF).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers

if TYPE_CHECKING:
    from warpserve.tokenization.tokenizer import Tokenizer


@dataclass
class ModelSource(ABC):
    path: Path  # the resolved file (.gguf) or folder
    format: str  # "gguf" | "safetensors"
    config: transformers.PretrainedConfig  # `architectures` always set
    generation_config: dict[str, Any]  # generation_config.json or GGUF ids; {} if none

    @abstractmethod
    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF parameter name, tensor) pairs, one file region at a time.

        Floating-point tensors come as float32; integer buffers (e.g. BERT's position_ids)
        as stored. A tied LM head is not repeated: `lm_head.weight` appears only if untied.
        """

    @abstractmethod
    def load_tokenizer(self, cache_dir: Path | None = None) -> Tokenizer:
        """The model's tokenizer; `cache_dir` overrides where converted tokenizers are kept."""

    @property
    def max_position_embeddings(self) -> int | None:
        return getattr(self.config, "max_position_embeddings", None)
