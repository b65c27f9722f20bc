"""The native Llama-family decoder: Llama, Mistral, Qwen2 and SmolLM in one module.

RMSNorm, rotary embeddings (every rope-scaling variant), grouped-query attention over a
paged KV cache, SwiGLU MLP, tied or untied embeddings, optional q/k/v bias (Qwen2).
q/k/v and gate/up projections are fused into one GEMM each. Tokens arrive flattened
([T]) with their positions; per-step attention metadata is an argument, never a global.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from warpserve.layers.attention import (
    AttentionMetadata,
    DecodeAttention,
    paged_attention,
    sdpa_decode,
)
from warpserve.layers.norm import RMSNorm
from warpserve.layers.rotary import RotaryEmbedding


def head_dim_of(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def num_kv_heads_of(config: PretrainedConfig) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


class LlamaAttention(nn.Module):
    def __init__(
        self, config: PretrainedConfig, rotary: RotaryEmbedding, decode: DecodeAttention
    ) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = num_kv_heads_of(config)
        self.head_dim = head_dim_of(config)
        self.scale = self.head_dim**-0.5
        # Qwen2 puts a bias on q/k/v only; Llama's attention_bias covers all four.
        qkv_bias = config.model_type == "qwen2" or bool(getattr(config, "attention_bias", False))
        o_bias = config.model_type != "qwen2" and bool(getattr(config, "attention_bias", False))
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = nn.Linear(config.hidden_size, self.q_size + 2 * self.kv_size, qkv_bias)
        self.o_proj = nn.Linear(self.q_size, config.hidden_size, o_bias)
        self.rotary = rotary
        self.decode_attention = decode

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden]
        positions: torch.Tensor,  # [T]
        kv_cache: torch.Tensor,  # [2, num_blocks, block_size, Hkv, D]
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        num_tokens = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(num_tokens, self.num_heads, self.head_dim)
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)
        q, k = self.rotary(positions, q, k)
        out = paged_attention(q, k, v, kv_cache, meta, self.scale, self.decode_attention)
        return self.o_proj(out.reshape(num_tokens, self.q_size))


class LlamaMLP(nn.Module):
    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias)
        act = config.hidden_act
        self.act = F.silu if act == "silu" else ACT2FN[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate_size, dim=-1)
        return self.down_proj(self.act(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(
        self, config: PretrainedConfig, rotary: RotaryEmbedding, decode: DecodeAttention
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config, rotary, decode)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        kv_cache: torch.Tensor,
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), positions, kv_cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaForCausalLM(nn.Module):
    """forward() returns final hidden states; compute_logits() applies the LM head.

    decode_attention: how decode rows attend (layers/paged_kernel.py resolves the
    configured backend once, before the model is built)."""

    def __init__(
        self,
        config: PretrainedConfig,
        max_positions: int,
        decode_attention: DecodeAttention = sdpa_decode,
    ) -> None:
        super().__init__()
        self.config = config
        self.decode_attention = decode_attention
        self.num_layers = config.num_hidden_layers
        self.num_kv_heads = num_kv_heads_of(config)
        self.head_dim = head_dim_of(config)
        # One rotary table shared by every layer (it is a buffer, not a parameter).
        rotary = RotaryEmbedding(config, self.head_dim, max_positions)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, rotary, decode_attention)
            for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        if self.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,  # [T]
        positions: torch.Tensor,  # [T]
        kv_caches: list[torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x = layer(x, positions, kv_cache, meta)
        return self.norm(x)  # [T, hidden]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()  # [N, vocab]

    @torch.no_grad()
    def load_weights(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy Transformers-named tensors in, fusing q/k/v and gate/up on the way."""
        params = dict(self.named_parameters(remove_duplicate=False))
        loaded: set[str] = set()
        for hf_name, tensor in tensors:
            name, shard = _native_name(hf_name)
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue  # the embedding is the LM head
            if name not in params:
                if "rotary_emb" in name:
                    continue
                raise ValueError(f"unexpected weight '{hf_name}' for {type(self).__name__}")
            self._copy_shard(params[name], shard, tensor, hf_name)
            loaded.add(f"{name}:{shard}")
        self._check_all_loaded(loaded)

    def _copy_shard(
        self, param: torch.Tensor, shard: str | None, tensor: torch.Tensor, hf_name: str
    ) -> None:
        rows = self._shard_rows(shard)
        target = param if rows is None else param[rows[0] : rows[1]]
        if target.shape != tensor.shape:
            raise ValueError(
                f"weight '{hf_name}' has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}"
            )
        target.copy_(tensor)

    def _shard_rows(self, shard: str | None) -> tuple[int, int] | None:
        q = self.config.num_attention_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        inter = self.config.intermediate_size
        return {
            None: None,
            "q": (0, q),
            "k": (q, q + kv),
            "v": (q + kv, q + 2 * kv),
            "gate": (0, inter),
            "up": (inter, 2 * inter),
        }[shard]

    def _check_all_loaded(self, loaded: set[str]) -> None:
        expected = set()
        for name, _ in self.named_parameters():
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue
            if name.endswith("qkv_proj.weight") or name.endswith("qkv_proj.bias"):
                expected |= {f"{name}:q", f"{name}:k", f"{name}:v"}
            elif name.endswith("gate_up_proj.weight") or name.endswith("gate_up_proj.bias"):
                expected |= {f"{name}:gate", f"{name}:up"}
            else:
                expected.add(f"{name}:None")
        missing = sorted(expected - loaded)
        if missing:
            raise ValueError(f"checkpoint is missing {len(missing)} weights, e.g. {missing[0]}")


_FUSED = {
    "q_proj": ("qkv_proj", "q"),
    "k_proj": ("qkv_proj", "k"),
    "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", "gate"),
    "up_proj": ("gate_up_proj", "up"),
}


def _native_name(hf_name: str) -> tuple[str, str | None]:
    """'model.layers.0.self_attn.q_proj.weight' -> ('layers.0.self_attn.qkv_proj.weight', 'q')."""
    name = hf_name.removeprefix("model.")
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] in _FUSED:
        fused, shard = _FUSED[parts[-2]]
        return ".".join([*parts[:-2], fused, parts[-1]]), shard
    return name, None
