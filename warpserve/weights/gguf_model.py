"""What a GGUF file means in Hugging Face terms: its config, generation ids and tensor names.

llama.cpp stores a model under its own names (`blk.0.attn_q.weight`) and, for the Llama
architecture only, with the rows of Q and K permuted for its rotary layout (pairs of
interleaved halves instead of two halves). We rename and un-permute so callers see exactly
what `transformers` would load from the same file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import transformers
from transformers.integrations.ggml import GGUF_CONFIG_MAPPING as _TRANSFORMERS_CONFIG_KEYS

# GGUF architecture -> the Transformers causal-LM class it converts to.
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}
# llama.cpp's converter permutes Q/K rows only for its LlamaModel family.
PERMUTED_QK_ARCHITECTURES = frozenset({"llama"})
# Keys Transformers' table leaves out but the file states: Qwen3's head width.
_EXTRA_CONFIG_KEYS = {"attention.key_length": "head_dim"}
# Transformers' table: {architecture or "tokenizer": {gguf key: HF config key, or None/-1: skip}}
CONFIG_KEYS = cast(dict[str, dict[str, Any]], _TRANSFORMERS_CONFIG_KEYS)

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


@dataclass(frozen=True)
class TensorPlan:
    """How one GGUF tensor becomes one HF parameter."""

    hf_name: str
    num_permute_heads: int | None  # un-permute rows over this many heads; None: leave as is


def check_architecture(metadata: dict[str, Any], path: object) -> str:
    architecture = metadata.get("general.architecture")
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"GGUF file {path} has architecture {architecture!r}; warpserve reads "
            f"{', '.join(ARCHITECTURES)} GGUF files (use a Hugging Face folder for others)"
        )
    return architecture


def build_config(
    metadata: dict[str, Any], tensor_names: set[str], path: object
) -> transformers.PretrainedConfig:
    """The HF config the metadata describes, as Transformers' GGUF loader would build it."""
    architecture = check_architecture(metadata, path)
    values: dict[str, Any] = {}
    renames = CONFIG_KEYS[architecture] | _EXTRA_CONFIG_KEYS
    for gguf_key, hf_key in renames.items():
        value = metadata.get(f"{architecture}.{gguf_key}")
        if isinstance(hf_key, str) and value is not None:
            values[hf_key] = value
    for gguf_key, hf_key in CONFIG_KEYS["tokenizer"].items():
        if f"tokenizer.{gguf_key}" in metadata:
            values[hf_key] = metadata[f"tokenizer.{gguf_key}"]
    if "vocab_size" not in values:  # older files: the vocabulary's length (left as a count)
        values["vocab_size"] = metadata["tokenizer.ggml.tokens"]
    # llama.cpp writes output.weight only when the LM head is not the embedding matrix
    values["tie_word_embeddings"] = "output.weight" not in tensor_names
    values["architectures"] = [ARCHITECTURES[architecture]]
    return transformers.AutoConfig.for_model(architecture, **values)


def generation_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """bos/eos/pad ids; eos also lists llama.cpp's end-of-turn tokens, which stop a chat reply."""
    result: dict[str, Any] = {}
    for gguf_key, hf_key in (
        ("bos_token_id", "bos_token_id"),
        ("padding_token_id", "pad_token_id"),
    ):
        if f"tokenizer.ggml.{gguf_key}" in metadata:
            result[hf_key] = int(metadata[f"tokenizer.ggml.{gguf_key}"])
    eos_keys = ("eos_token_id", "eot_token_id", "eom_token_id")
    eos_ids = [
        int(metadata[f"tokenizer.ggml.{k}"]) for k in eos_keys if f"tokenizer.ggml.{k}" in metadata
    ]
    eos_ids = list(dict.fromkeys(eos_ids))
    if eos_ids:
        result["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    return result


def plan_tensor(
    gguf_name: str, architecture: str, config: transformers.PretrainedConfig
) -> TensorPlan:
    """The HF name of a GGUF tensor and whether its rows need un-permuting."""
    if gguf_name in _GLOBAL_NAMES:
        return TensorPlan(_GLOBAL_NAMES[gguf_name], None)
    if gguf_name == "rope_freqs.weight":
        raise ValueError(
            "GGUF tensor 'rope_freqs.weight' (Llama 3.1-style RoPE scaling) is not supported "
            "yet: load this model from its Hugging Face folder instead"
        )
    match = _LAYER_TENSOR.fullmatch(gguf_name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise ValueError(f"GGUF tensor {gguf_name!r} has no known Hugging Face name")
    layer, part, kind = match.groups()
    hf_name = f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}"
    heads = None
    if architecture in PERMUTED_QK_ARCHITECTURES and part == "attn_q":
        heads = config.num_attention_heads
    elif architecture in PERMUTED_QK_ARCHITECTURES and part == "attn_k":
        heads = config.num_key_value_heads
    return TensorPlan(hf_name, heads)


def unpermute_row_order(num_rows: int, num_heads: int) -> np.ndarray:
    """Row indices that undo llama.cpp's Q/K permutation: out = permuted[order].

    llama.cpp reorders each head's rows [h0 (first half), h1 (second half)] into interleaved
    pairs (h0[0], h1[0], h0[1], h1[1], ...); this index gathers the halves back. It acts on
    whole rows, so it applies equally to float weights, biases and raw quantized rows.
    """
    half = num_rows // num_heads // 2
    return np.arange(num_rows).reshape(num_heads, half, 2).swapaxes(1, 2).reshape(-1)
