"""Maps a config's `architectures` to the native class; anything else falls back to Transformers."""

from __future__ import annotations

import logging

import torch
from transformers import PretrainedConfig

from warpserve.layers.attention import DecodeAttention, sdpa_decode
from warpserve.models.llama import LlamaForCausalLM

logger = logging.getLogger(__name__)

NATIVE_ARCHITECTURES: dict[str, type[LlamaForCausalLM]] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
}


def native_class(config: PretrainedConfig) -> type[LlamaForCausalLM] | None:
    for arch in getattr(config, "architectures", None) or []:
        if arch in NATIVE_ARCHITECTURES:
            return NATIVE_ARCHITECTURES[arch]
    return None


def context_length(config: PretrainedConfig, max_model_len: int | None) -> int:
    """The model's context, capped by the user's max_model_len and any sliding window."""
    limit = getattr(config, "max_position_embeddings", None) or 2048
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        # The native attention is full attention: stay within the window so it is exact.
        limit = min(limit, int(window))
    if max_model_len is not None:
        if max_model_len > limit:
            raise ValueError(f"max_model_len {max_model_len} exceeds the model's context {limit}")
        limit = max_model_len
    return int(limit)


def build_native(
    config: PretrainedConfig,
    max_model_len: int,
    dtype: torch.dtype,
    decode_attention: DecodeAttention = sdpa_decode,
) -> LlamaForCausalLM | None:
    cls = native_class(config)
    if cls is None:
        return None
    model = cls(config, max_model_len, decode_attention)
    return model.to(dtype).eval()
