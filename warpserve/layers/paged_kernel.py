"""The C++ paged decode-attention kernel (csrc/paged_attention.cpp): built on first use,
cached on disk, optional.

`decode_attention(backend)` resolves `ModelConfig.attention_backend` once, when a model is
built: the kernel, or `sdpa_decode` (gather + scaled_dot_product_attention: slower, same
results within rounding) when it is not wanted or cannot be built.
"""

from __future__ import annotations

import functools

import torch

from warpserve.layers import extensions
from warpserve.layers.attention import AttentionMetadata, DecodeAttention, sdpa_decode


@functools.cache
def load():
    """The built extension module, or None (no compiler, or the build failed)."""
    return extensions.build("warpserve_paged_attention", "paged_attention.cpp")


class KernelDecode:
    """Decode attention through the C++ kernel, reading K/V in place."""

    def __init__(self, module) -> None:
        self._kernel = module.paged_decode_attention

    def __call__(
        self, q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
    ) -> torch.Tensor:
        out = self._kernel(  # [B, Hq, D] float32
            q, kv_cache[0], kv_cache[1], meta.decode_block_tables, meta.decode_context_lens, scale
        )
        return out.to(q.dtype)


def decode_attention(backend: str) -> DecodeAttention:
    """backend: "kernel" (ValueError if it does not build), "sdpa", or "auto" (the kernel
    when it builds)."""
    if backend == "sdpa":
        return sdpa_decode
    module = load()
    if module is None:
        if backend == "kernel":
            raise ValueError("attention_backend 'kernel' requested but the kernel did not build")
        return sdpa_decode
    return KernelDecode(module)
