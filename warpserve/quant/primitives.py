"""Quantize and dequantize tensors: the number formats, free of any kernel or module.

Formats (all weights are nn.Linear layout [N, K] = [out_features, in_features]):
- int8 per-channel: symmetric, q in [-127, 127], w ~= q * scale[n]. -128 is never used so
  that negation is exact and the W8A8 product of two int8 values stays within +-127^2.
- int4 group-wise along K: 16 levels per group of `group_size` consecutive input weights,
  w ~= (q - 8) * scale + zero with q in [0, 15]. This is the convention of the CPU int4
  kernel (aten._weight_int4pack_mm_for_cpu), so one format serves both the fused kernel and
  the dequantize fallback. Asymmetric (default): scale = (max - min) / 15 and zero is chosen
  so that q = 0 maps to min: all 16 levels are used even for skewed groups. Symmetric: zero = 0,
  scale = absmax / 7 (q - 8 in [-8, 7]); one level fewer in use, no zero point to store
  besides a 0.
- int8 per-token activations (W8A8): symmetric per row, computed at run time.
"""

from __future__ import annotations

import torch

INT8_MAX = 127
INT4_LEVELS = 15  # q in [0, 15]
INT4_MID = 8  # kernel convention: the stored zero is the value of q == 8
_TINY = 1e-12  # floor on scales: an all-zero row or group must not divide by zero


def quantize_int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (q [N, K] int8, scale [N] float32), symmetric per output channel."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=_TINY) / INT8_MAX  # [N]
    q = torch.round(w / scale[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def dequantize_int8_per_channel(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(q [N, K] int8, scale [N]) -> [N, K] float32."""
    return q.float() * scale.float()[:, None]


def quantize_int8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] float -> (q [M, K] int8, scale [M, 1] float32), symmetric per row (token)."""
    x = x.float()
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=_TINY) / INT8_MAX  # [M, 1]
    q = torch.round(x / scale).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def quantize_int4_groupwise(
    weight: torch.Tensor, group_size: int, *, symmetric: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, K] float -> (q [N, K] uint8 in [0, 15], scale [N, K/G], zero [N, K/G]) float32."""
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of group_size {group_size}")
    w = weight.detach().float().reshape(n, k // group_size, group_size)  # [N, K/G, G]
    if symmetric:
        scale = w.abs().amax(dim=-1).clamp(min=_TINY) / (INT4_MID - 1)
        zero = torch.zeros_like(scale)
    else:
        w_min, w_max = w.amin(dim=-1), w.amax(dim=-1)
        scale = (w_max - w_min).clamp(min=_TINY) / INT4_LEVELS
        zero = w_min + INT4_MID * scale  # q == 0 <-> w_min
    q = torch.round((w - zero[..., None]) / scale[..., None]) + INT4_MID
    q = q.clamp(0, INT4_LEVELS).to(torch.uint8).reshape(n, k)
    return q, scale, zero


def dequantize_int4_groupwise(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor
) -> torch.Tensor:
    """(q [N, K] uint8, scale/zero [N, K/G]) -> [N, K] float32."""
    n, k = q.shape
    groups = scale.shape[1]
    qf = q.float().reshape(n, groups, k // groups) - INT4_MID  # [N, K/G, G]
    w = qf * scale.float()[..., None] + zero.float()[..., None]
    return w.reshape(n, k)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[N, K] uint8 in [0, 15] -> [N, K/2] uint8: column k in the low nibble of byte k, column
    K/2 + k in the high nibble. Halves rather than even/odd pairs so that unpacking is two
    contiguous copies (interleaving measured ~2x slower in the dequantize path)."""
    half = q.shape[1] // 2
    return (q[:, :half] | (q[:, half:] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """[N, K/2] uint8 -> [N, K] uint8 in [0, 15]; inverse of pack_int4."""
    return torch.cat([packed & 0x0F, packed >> 4], dim=1)
