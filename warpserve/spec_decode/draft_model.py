"""A separate draft model that shares the target's tokenizer, with its own paged K/V.

The draft's K/V tensors have as many blocks as the target's and are addressed through
the target's block tables, so the scheduler's allocation covers both caches and no
second block manager is needed. The draft computes its own K/V for every position it
reads (never trusting prefix-cache hits it did not compute); a preemption resets it.
"""

from __future__ import annotations

import torch

from warpserve.execution.executor import ModelExecutor
from warpserve.layers.attention import DecodeAttention
from warpserve.models.llama import LlamaForCausalLM
from warpserve.models.registry import build_native, context_length
from warpserve.spec_decode.drafter import FUSED_MAX_TOKENS, ModelDrafter
from warpserve.weights.loader import open_model_source


def load_draft_model(
    path: str,
    dtype: torch.dtype,
    max_model_len: int,
    target_vocab_size: int,
    decode_attention: DecodeAttention,
    quantization: str | None = None,
) -> LlamaForCausalLM:
    """A native decoder from a folder or .gguf, optionally with weight-only quantized
    linears, whose decode rows attend as the target's do; ValueError if it cannot draft
    for the target."""
    source = open_model_source(path)
    if source.config.vocab_size != target_vocab_size:
        raise ValueError(
            f"draft model {path} has a vocabulary of {source.config.vocab_size}, the target "
            f"{target_vocab_size}: a draft model must share the target's tokenizer"
        )
    if context_length(source.config, None) < max_model_len:
        raise ValueError(f"draft model {path} has a shorter context than max_model_len")
    model = build_native(source.config, max_model_len, dtype, decode_attention)
    if model is None:
        raise ValueError(f"draft model {path}: no native class for its architecture")
    model.load_weights((name, t.to(dtype)) for name, t in source.iter_tensors())
    if quantization is not None:
        from warpserve.quant import quantize_model  # only drafts that ask pay for the import

        quantize_model(model, quantization)
    return model


def draft_model_proposer(model: LlamaForCausalLM, target: ModelExecutor) -> ModelDrafter:
    """K/V tensors of the draft's own over the target's block ids; decode rows through
    a fused decoder over the draft's weights where the target decodes fused (one C++ call
    per draft step; the eager modules cost several times more at a few rows)."""
    executor = ModelExecutor.build(
        model,
        target.num_blocks,
        target.block_size,
        target.decode_backend,
        quiet=True,
        fused_max_tokens=FUSED_MAX_TOKENS,
    )
    return ModelDrafter("draft", executor, shares_target_cache=False)
