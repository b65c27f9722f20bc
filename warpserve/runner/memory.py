"""Large tensors on 2 MB pages where Linux grants them (transparent huge pages in
"madvise" mode, the common default): decode streams the whole KV cache and every weight
each step, and with 4 KB pages each 4 KB is a TLB miss and a stop for the hardware
prefetcher. Measured with `warpserve bench decode-step` (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import ctypes
import sys

import torch
from torch import nn

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
    """torch.zeros(shape, dtype), its 2 MB-aligned interior advised to huge pages before
    the first write touches it. The advice is a hint: without it, plain zeros."""
    tensor = torch.empty(shape, dtype=dtype)
    if _madvise_fn is not None:
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        first = -(-start // HUGE_PAGE) * HUGE_PAGE
        last = end // HUGE_PAGE * HUGE_PAGE
        if last > first:
            _madvise_fn(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_HUGEPAGE)
    return tensor.zero_()


def allocate_kv(model: nn.Module, num_blocks: int, block_size: int) -> list[torch.Tensor]:
    """One zeroed K/V tensor [2, num_blocks, block_size, Hkv, D] per layer of a native
    decoder, in its parameters' dtype, on huge pages."""
    dtype = next(model.parameters()).dtype
    shape = (2, num_blocks, block_size, model.num_kv_heads, model.head_dim)
    return [zeros_on_huge_pages(shape, dtype) for _ in range(model.num_layers)]
