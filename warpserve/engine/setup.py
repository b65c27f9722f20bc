"""From a model name to a ready model: weights, tokenizer, context length and KV blocks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import nn

from warpserve.config import CacheConfig, ModelConfig
from warpserve.kv_cache.sizing import num_blocks_for_budget
from warpserve.layers import paged_kernel
from warpserve.models.hf_fallback import TransformersCausalLM
from warpserve.models.llama import LlamaForCausalLM
from warpserve.models.registry import build_native, context_length, native_class
from warpserve.tokenization.tokenizer import Tokenizer
from warpserve.weights.loader import open_model_source

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    name: str
    model: LlamaForCausalLM | TransformersCausalLM
    tokenizer: Tokenizer
    max_model_len: int
    num_blocks: int
    vocab_size: int
    is_fallback: bool


def load_model(model_config: ModelConfig, cache_config: CacheConfig) -> LoadedModel:
    if model_config.num_threads:
        torch.set_num_threads(model_config.num_threads)
    started = time.perf_counter()
    source = open_model_source(model_config.model)
    tokenizer = source.load_tokenizer()
    max_len = context_length(source.config, model_config.max_model_len)
    dtype = _DTYPES[model_config.dtype]
    native = _native(source.config, max_len, dtype, model_config)
    model = native if native is not None else _fallback(source.config, dtype)
    model.load_weights((name, t.to(dtype)) for name, t in source.iter_tensors())
    if native is not None and model_config.quantization != "none":
        from warpserve.quant.swap import quantize_model

        quantize_model(native, model_config.quantization)
    logger.info("loaded %s in %.1f s", source.path, time.perf_counter() - started)
    return assemble(model_config.model, model, tokenizer, max_len, cache_config)


def assemble(
    name: str,
    model: LlamaForCausalLM | TransformersCausalLM,
    tokenizer: Tokenizer,
    max_model_len: int,
    cache: CacheConfig,
) -> LoadedModel:
    """Size the KV cache for a built model (tests call this with tiny random models)."""
    config = model.config
    num_blocks = _num_blocks(model, config, cache)
    is_fallback = isinstance(model, TransformersCausalLM)
    vocab_size = config.vocab_size
    return LoadedModel(name, model, tokenizer, max_model_len, num_blocks, vocab_size, is_fallback)


def _native(
    config, max_len: int, dtype: torch.dtype, model_config: ModelConfig
) -> LlamaForCausalLM | None:
    """The native model, its decode attention chosen once, here; None when the model runs
    through Transformers (an architecture it does not cover, or force_fallback)."""
    if model_config.force_fallback or native_class(config) is None:
        return None
    decode = paged_kernel.decode_attention(model_config.attention_backend)
    return build_native(config, max_len, dtype, decode)


def _fallback(config, dtype: torch.dtype) -> TransformersCausalLM:
    archs = getattr(config, "architectures", None)
    logger.warning("no native class for %s: running through Transformers (slower)", archs)
    return TransformersCausalLM.from_config(config, dtype)


def _num_blocks(model: nn.Module, config, cache: CacheConfig) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    num_kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    dtype_bytes = next(model.parameters()).element_size()
    return num_blocks_for_budget(
        cache.memory_gib,
        config.num_hidden_layers,
        num_kv_heads,
        head_dim,
        dtype_bytes,
        cache.block_size,
    )
