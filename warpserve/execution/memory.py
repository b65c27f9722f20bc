"""Large tensors on 2 MB pages where Linux grants them (transparent huge pages in
"madvise" mode, the common default): decode streams the whole KV cache and every weight
each step, and with 4 KB pages each 4 KB is a TLB miss and a stop for the hardware
prefetcher. Measured with `warpserve bench decode-step` (docs/ARCHITECTURE.md).

The one place that places memory: the K/V caches here, and the fused decoder's repacked
weights, which the C++ extension hands to `on_huge_pages` when it builds them.
"""

from __future__ import annotations

import ctypes
import sys
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from warpserve.models.llama import LlamaForCausalLM

HUGE_PAGE = 2 << 20
_MADV_HUGEPAGE = 14


def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None


_madvise_fn = _madvise()


def zeros_on_huge_pages(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """torch.zeros(shape, dtype), starting on a 2 MB boundary and advised to huge pages
    before the first write touches it. The advice is a hint: without it, plain zeros."""
    numel = 1
    for size in shape:
        numel *= size
    num_bytes = numel * dtype.itemsize
    if _madvise_fn is None or num_bytes < HUGE_PAGE:
        return torch.zeros(shape, dtype=dtype)
    rounded = -(-num_bytes // HUGE_PAGE) * HUGE_PAGE
    # Over-allocate by one page so that a 2 MB-aligned span of `rounded` bytes fits: the
    # allocator aligns to 64 bytes, and a span that is not aligned gets no huge page at all
    # when it is only a little over 2 MB (the slices keep the whole buffer alive).
    buffer = torch.empty(rounded + HUGE_PAGE, dtype=torch.uint8)
    start = buffer.data_ptr()
    offset = -(-start // HUGE_PAGE) * HUGE_PAGE - start
    _madvise_fn(ctypes.c_void_p(start + offset), ctypes.c_size_t(rounded), _MADV_HUGEPAGE)
    tensor = buffer[offset : offset + num_bytes].view(dtype).view(shape)
    return tensor.zero_()


def on_huge_pages(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of `tensor` on huge pages (the fused decoder's packed weights)."""
    copy = zeros_on_huge_pages(tuple(tensor.shape), tensor.dtype)
    return copy.copy_(tensor)


def allocate_kv(model: LlamaForCausalLM, num_blocks: int, block_size: int) -> list[torch.Tensor]:
    """One zeroed K/V tensor [2, num_blocks, block_size, Hkv, D] per layer of a native
    decoder, in its parameters' dtype, on huge pages."""
    dtype = next(model.parameters()).dtype
    shape = (2, num_blocks, block_size, model.num_kv_heads, model.head_dim)
    return [zeros_on_huge_pages(shape, dtype) for _ in range(model.num_layers)]
