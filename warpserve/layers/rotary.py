"""Rotary position embeddings with every rope-scaling variant Transformers' configs name.

The inverse frequencies come from Transformers' own rope initialisers (default, linear,
llama3, yarn, longrope, ...), so a config means exactly what it means there. cos/sin are
tabulated once for every position up to the context length and gathered by position.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS


def rope_parameters(config: PretrainedConfig) -> dict:
    params = getattr(config, "rope_parameters", None) or {}
    if not params:  # configs written before rope_parameters existed
        scaling = dict(getattr(config, "rope_scaling", None) or {})
        params = {"rope_type": scaling.get("rope_type", scaling.get("type", "default"))}
        params["rope_theta"] = getattr(config, "rope_theta", 10000.0)
        params.update(scaling)
    return params


def inverse_frequencies(config: PretrainedConfig, head_dim: int) -> tuple[torch.Tensor, float]:
    params = rope_parameters(config)
    rope_type = params.get("rope_type", "default")
    if rope_type == "dynamic":
        # Dynamic NTK rescales with each sequence's current length, which a batch of
        # sequences of different lengths cannot share; refuse rather than be subtly wrong.
        raise ValueError("rope_type 'dynamic' is not supported by the native model")
    if rope_type == "default":
        base = params.get("rope_theta", 10000.0)
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        return inv_freq, 1.0
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, None)
    return inv_freq.float(), float(scaling)


class RotaryEmbedding(nn.Module):
    cos: torch.Tensor  # [P, D] buffers, registered in __init__
    sin: torch.Tensor

    def __init__(self, config: PretrainedConfig, head_dim: int, max_positions: int) -> None:
        super().__init__()
        inv_freq, scaling = inverse_frequencies(config, head_dim)
        positions = torch.arange(max_positions, dtype=torch.float)
        freqs = positions[:, None] * inv_freq[None, :]  # [P, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [P, D]
        self.register_buffer("cos", emb.cos() * scaling, persistent=False)
        self.register_buffer("sin", emb.sin() * scaling, persistent=False)

    def forward(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q [T, Hq, D], k [T, Hkv, D], positions [T] -> rotated q, k."""
        cos = self.cos[positions].unsqueeze(1).to(q.dtype)  # [T, 1, D]
        sin = self.sin[positions].unsqueeze(1).to(q.dtype)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
