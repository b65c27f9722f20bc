"""The C++ paged decode-attention kernel: built on first use, cached on disk, optional.

If the compiler is missing or the build fails, `load()` returns None and attention falls
back to gather + scaled_dot_product_attention (slower, same results within rounding).
"""

from __future__ import annotations

import functools
import logging

import torch

from warpserve.layers import extensions

logger = logging.getLogger(__name__)


@functools.cache
def load():
    """`torch.ops.warpserve.paged_decode_attention`, or None if the kernel cannot be built.

    The extension is wrapped as a torch custom op (with a fake implementation for shape
    propagation) so that torch.compile can trace a decode step through it.
    """
    module = _build()
    if module is None:
        return None
    _register(module)
    return torch.ops.warpserve.paged_decode_attention


def _register(module) -> None:
    @torch.library.custom_op("warpserve::paged_decode_attention", mutates_args=())
    def paged_decode_attention(
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        block_tables: torch.Tensor,
        context_lens: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        return module.paged_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale)

    @paged_decode_attention.register_fake
    def _(q, k_cache, v_cache, block_tables, context_lens, scale):
        return torch.empty_like(q, dtype=torch.float32)


def _build():
    return extensions.build("warpserve_paged_attention", "paged_attention.cpp")
