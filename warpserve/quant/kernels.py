"""The matmul kernels behind the quantized linears, and which one runs for how many tokens.

Every kernel maps x [M, K] float plus a quantized weight to y [M, N] in x's dtype, and
computes the same function as `x @ dequantize(weight).T` up to its rounding (bf16
activations, int8 activations). The choice per scheme and token count comes from
`warpserve bench kernels` on the target CPU; the table and the reasons are in
docs/ARCHITECTURE.md, section "Quantization kernels". In short, on a 2-core AVX2 EPYC
without VNNI:
- small M (decode): the fused int8/int4 kernels read 4x/8x fewer weight bytes than fp32 and
  win 1.3-3.3x, but only with bfloat16 activations (their fp32-activation entry points are
  scalar loops, 3-20x slower than fp32);
- large M (prefill, big batches) is compute-bound: MKL's fp32 GEMM beats every fused kernel
  here, so the weight is dequantized per call (in row chunks) and run through fp32; that
  costs N*K element ops, small next to the M*N*K multiply-adds;
- torch._int_mm (int8 x int8 -> int32) has a fast oneDNN path only on CPUs with VNNI; without
  it, it is a reference loop 3-60x slower than fp32, so W8A8 uses it only where VNNI exists.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from warpserve.quant.primitives import quantize_int8_per_token, unpack_int4

# Up to this many tokens per call the fused weight-only kernels beat dequantize + fp32 GEMM
# (measured crossover: int8 between M = 16 and 32 on SmolLM2-135M's layer shapes, 8-16 on
# its LM head; int4 around 32).
FUSED_MAX_TOKENS = 16


# The dequantize path converts this many weight rows at a time: a 1024 x K fp32 temporary
# (2.4 MB at K = 576) stays in L2/L3 for the GEMM that reads it. Dequantizing the whole LM
# head at once (a fresh 113 MB tensor per call) measured 3.5x slower than fp32 at M = 32;
# chunked, it matches fp32.
DEQUANT_CHUNK_ROWS = 1024


def has_fast_int_mm() -> bool:
    """torch._int_mm reaches oneDNN's int8 GEMM only with VNNI (AVX512-VNNI / AVX-VNNI)."""
    return bool(torch.cpu._is_vnni_supported())


# ---- int8 weight-only: q [N, K] int8, scale [N] float32 ----


def int8_wo_int8pack_bf16(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Fused dequantize-GEMV; the bf16 entry point is the vectorized one."""
    y = torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), q, scale.to(torch.bfloat16))
    return y.to(x.dtype)


def int8_wo_int8pack_fp32(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Same op with fp32 activations: exact but a slow path (kept for the benchmark)."""
    return torch.ops.aten._weight_int8pack_mm(x.float(), q, scale.float()).to(x.dtype)


def chunked_linear(
    x: torch.Tensor, num_rows: int, weight_rows: Callable[[int, int], torch.Tensor]
) -> torch.Tensor:
    """x [M, K] @ W.T where weight_rows(start, stop) -> W[start:stop] [rows, K] in x.dtype."""
    out = torch.empty(x.shape[0], num_rows, dtype=x.dtype)  # [M, N]
    for start in range(0, num_rows, DEQUANT_CHUNK_ROWS):
        stop = min(start + DEQUANT_CHUNK_ROWS, num_rows)
        torch.matmul(x, weight_rows(start, stop).t(), out=out[:, start:stop])
    return out


def int8_wo_dequant(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Integer weights as float through MKL, then the per-channel scale on the [M, N] output."""
    y = chunked_linear(x, q.shape[0], lambda a, b: q[a:b].to(x.dtype))
    return y.mul_(scale.to(x.dtype))


# ---- int4 group-wise: see primitives.py for the format ----


def int4_tinygemm_bf16(
    x: torch.Tensor, packed: torch.Tensor, scale_zero: torch.Tensor, group_size: int
) -> torch.Tensor:
    """packed: _convert_weight_to_int4pack_for_cpu layout; scale_zero [K/G, N, 2] bf16."""
    xb = x.to(torch.bfloat16)
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, packed, group_size, scale_zero)
    return y.to(x.dtype)


def int4_tinygemm_fp32(
    x: torch.Tensor, packed: torch.Tensor, scale_zero: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Same op with fp32 activations: a slow path here (kept for the benchmark)."""
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(
        x.float(), packed, group_size, scale_zero.float()
    )
    return y.to(x.dtype)


def int4_dequant(
    x: torch.Tensor, nibbles: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor
) -> torch.Tensor:
    """nibbles [N, K/2] uint8 (pack_int4); scale, offset = zero - 8 * scale [N, K/G]."""
    return chunked_linear(
        x, nibbles.shape[0], lambda a, b: _int4_rows(nibbles, scale, offset, a, b, x.dtype)
    )


def _int4_rows(nibbles, scale, offset, start: int, stop: int, dtype: torch.dtype) -> torch.Tensor:
    """Rows start:stop of the dequantized weight. In-place multiply-add on the one temporary
    (~4x faster than out-of-place)."""
    s, o = scale[start:stop, :, None].to(dtype), offset[start:stop, :, None].to(dtype)
    w = unpack_int4(nibbles[start:stop]).to(dtype).view(stop - start, s.shape[1], -1)  # [R, K/G, G]
    return w.mul_(s).add_(o).view(stop - start, -1)


# ---- W8A8: per-token dynamic int8 activations x per-channel int8 weights ----


def w8a8_int_mm(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 x int8 -> int32 GEMM (oneDNN with VNNI), scales applied to the int32 result."""
    xq, x_scale = quantize_int8_per_token(x)  # [M, K] int8, [M, 1]
    acc = torch._int_mm(xq, q.t())  # [M, N] int32
    return (acc.float() * x_scale * scale).to(x.dtype)


def w8a8_int8pack_bf16(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 activation values are exact in bf16, so the fused weight-only kernel computes the
    same integer products (fp32 accumulate, bf16 output rounding)."""
    xq, x_scale = quantize_int8_per_token(x)
    y = torch.ops.aten._weight_int8pack_mm(xq.to(torch.bfloat16), q, scale.to(torch.bfloat16))
    return (y.float() * x_scale).to(x.dtype)


def w8a8_dequant(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Integer values through fp32 MKL: exact while |sum| < 2^24, i.e. for K <= 1040 at full
    range and in practice far beyond (products rarely all reach 127^2)."""
    xq, x_scale = quantize_int8_per_token(x)
    acc = chunked_linear(xq.float(), q.shape[0], lambda a, b: q[a:b].float())  # [M, N]
    return (acc * x_scale * scale).to(x.dtype)


Int8Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

INT8_WO_KERNELS: dict[str, Int8Kernel] = {
    "int8pack_bf16": int8_wo_int8pack_bf16,
    "int8pack_fp32": int8_wo_int8pack_fp32,
    "dequant_fp32": int8_wo_dequant,
}
W8A8_KERNELS: dict[str, Int8Kernel] = {
    "int_mm": w8a8_int_mm,
    "int8pack_bf16": w8a8_int8pack_bf16,
    "dequant_fp32": w8a8_dequant,
}
INT4_KERNELS = ("tinygemm_bf16", "tinygemm_fp32", "dequant_fp32")


def choose_int8_wo_kernel(num_tokens: int) -> str:
    return "int8pack_bf16" if num_tokens <= FUSED_MAX_TOKENS else "dequant_fp32"


def choose_int4_kernel(num_tokens: int) -> str:
    return "tinygemm_bf16" if num_tokens <= FUSED_MAX_TOKENS else "dequant_fp32"


def choose_w8a8_kernel(num_tokens: int, *, fast_int_mm: bool) -> str:
    if fast_int_mm:
        return "int_mm"
    return "int8pack_bf16" if num_tokens <= FUSED_MAX_TOKENS else "dequant_fp32"
