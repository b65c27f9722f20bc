"""ggml block formats -> float32, vectorized in numpy over all blocks of a tensor at once.

numpy rather than torch: these are a dozen cheap element-wise passes per tensor, and torch's
intra-op thread pool costs more in synchronisation than it saves on such ops (20x slower
with two threads on a busy machine); numpy runs each pass single-threaded, predictably.
Bit fields are unpacked four bytes at a time by working on uint32 words.

Each `_q*` function takes `blocks: [N, block_bytes] uint8` and returns `[N, block_size]`
float32, doing the float operations in ggml's order (scale times quant, then the offset), so
results match `gguf.quants.dequantize` bit for bit.

Block layouts (byte offsets; d/dmin/m are float16; QK_K = 256 values per super-block):
  Q4_0  [d:2][qs:16]                  x = d * (q - 8), q = 4-bit (low nibbles, then high)
  Q4_1  [d:2][m:2][qs:16]             x = d * q + m
  Q5_0  [d:2][qh:4][qs:16]            x = d * (q - 16), q = 4-bit | bit i of qh << 4
  Q5_1  [d:2][m:2][qh:4][qs:16]       x = d * q + m
  Q8_0  [d:2][qs:32 int8]             x = d * q
  Q2_K  [scales:16][qs:64][d][dmin]   16 groups of 16; 4-bit scale and min per group
  Q3_K  [hmask:32][qs:64][scales:12][d]  16 groups; 6-bit signed scales; 2 bits + high bit
  Q4_K  [d][dmin][scales:12][qs:128]  8 groups of 32; 6-bit scale and min per group
  Q5_K  [d][dmin][scales:12][qh:32][qs:128]
  Q6_K  [ql:128][qh:64][scales:16 int8][d]  16 groups of 16
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

T = GGMLQuantizationType
QK_K = 256
# Blocks per chunk: bounds the temporaries of a large tensor (e.g. an embedding) and keeps
# each chunk's working set in cache.
CHUNK_BLOCKS = 1 << 15
F32 = np.float32


def _half(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte `start` of every block -> [N, 1] float32."""
    return blocks[:, start : start + 2].view(np.float16).astype(F32)


def _planes(packed: np.ndarray, group: int, bits: int) -> np.ndarray:
    """[N, k*group] bytes -> [N, k*(8//bits), group] uint8.

    Each run of `group` bytes becomes 8//bits rows: the lowest `bits` of every byte, then the
    next `bits`, and so on (for bits=4: the low nibbles, then the high nibbles).
    """
    n = packed.shape[0]
    words = packed.view(np.uint32).reshape(n, -1, 1, group // 4)
    shifts = np.arange(0, 8, bits, dtype=np.uint32).reshape(1, 1, -1, 1)
    mask = np.uint32(((1 << bits) - 1) * 0x01010101)  # the field in each of the 4 bytes
    return ((words >> shifts) & mask).view(np.uint8).reshape(n, -1, group)


def _bit_rows(packed: np.ndarray) -> np.ndarray:
    """[N, k] bytes -> [N, 8, k]: row b holds bit b of every byte."""
    bits = np.unpackbits(packed, axis=1, bitorder="little")  # [N, k*8], byte-major
    return bits.reshape(packed.shape[0], -1, 8).transpose(0, 2, 1)


def _q4_0(blocks: np.ndarray) -> np.ndarray:
    x = _planes(blocks[:, 2:], 16, 4).reshape(-1, 32).astype(F32)
    x -= 8
    x *= _half(blocks, 0)
    return x


def _q4_1(blocks: np.ndarray) -> np.ndarray:
    x = np.multiply(_planes(blocks[:, 4:], 16, 4).reshape(-1, 32), _half(blocks, 0), dtype=F32)
    x += _half(blocks, 2)
    return x


def _q5_values(qh: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Low nibbles from qs, the fifth bit of value i from bit i of the 32-bit qh -> [N, 32]."""
    high = np.unpackbits(qh, axis=1, bitorder="little")  # [N, 32]: value order
    return _planes(qs, 16, 4).reshape(-1, 32) | (high << 4)


def _q5_0(blocks: np.ndarray) -> np.ndarray:
    x = _q5_values(blocks[:, 2:6], blocks[:, 6:]).astype(F32)
    x -= 16
    x *= _half(blocks, 0)
    return x


def _q5_1(blocks: np.ndarray) -> np.ndarray:
    x = np.multiply(_q5_values(blocks[:, 4:8], blocks[:, 8:]), _half(blocks, 0), dtype=F32)
    x += _half(blocks, 2)
    return x


def _q8_0(blocks: np.ndarray) -> np.ndarray:
    return np.multiply(blocks[:, 2:].view(np.int8), _half(blocks, 0), dtype=F32)


def _q2_k(blocks: np.ndarray) -> np.ndarray:
    n, scales = blocks.shape[0], blocks[:, :16]
    dl = (_half(blocks, 80) * (scales & 0x0F).astype(F32)).reshape(n, 16, 1)
    ml = (_half(blocks, 82) * (scales >> 4).astype(F32)).reshape(n, 16, 1)
    q = _planes(blocks[:, 16:80], 32, 2).reshape(n, 16, 16)  # group g: plane g//2 of a half
    x = np.multiply(q, dl, dtype=F32)
    x -= ml
    return x.reshape(n, QK_K)


def _q3_k_scales(packed: np.ndarray) -> np.ndarray:
    """12 bytes -> 16 signed 6-bit scales: low 4 bits from bytes 0..7, high 2 from bytes 8..11."""
    n = packed.shape[0]
    low = np.stack((packed[:, :8] & 0x0F, packed[:, :8] >> 4), axis=1).reshape(n, 16)
    high = _planes(packed[:, 8:], 4, 2).reshape(n, 16)
    return (low | (high << 4)).astype(F32) - 32


def _q3_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    dl = (_half(blocks, 108) * _q3_k_scales(blocks[:, 96:108])).reshape(n, 16, 1)
    low = _planes(blocks[:, 32:96], 32, 2).reshape(n, 16, 16).view(np.int8)
    high = _bit_rows(blocks[:, :32]).reshape(n, 16, 16)  # a set bit means "no -4 offset"
    q = low - ((high ^ 1) << 2).view(np.int8)
    return np.multiply(q, dl, dtype=F32).reshape(n, QK_K)


def _k_scales_mins(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: 12 bytes -> 8 six-bit scales and 8 six-bit mins, as float32 [N, 8]."""
    a, b, c = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate((a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)), axis=1)
    mins = np.concatenate((b & 0x3F, (c >> 4) | ((b >> 6) << 4)), axis=1)
    return scales.astype(F32), mins.astype(F32)


def _k_scaled(blocks: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K: the per-group scale and min applied to q: [N, 8, 32] in 0..31."""
    n = blocks.shape[0]
    scales, mins = _k_scales_mins(blocks[:, 4:16])
    x = np.multiply(q, (_half(blocks, 0) * scales).reshape(n, 8, 1), dtype=F32)
    x -= (_half(blocks, 2) * mins).reshape(n, 8, 1)
    return x.reshape(n, QK_K)


def _q4_k(blocks: np.ndarray) -> np.ndarray:
    return _k_scaled(blocks, _planes(blocks[:, 16:144], 32, 4))


def _q5_k(blocks: np.ndarray) -> np.ndarray:
    q = _planes(blocks[:, 48:176], 32, 4) | (_bit_rows(blocks[:, 16:48]) << 4)
    return _k_scaled(blocks, q)


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    n = blocks.shape[0]
    d = (_half(blocks, 208) * blocks[:, 192:208].view(np.int8).astype(F32)).reshape(n, 16, 1)
    low = _planes(blocks[:, :128], 64, 4).reshape(n, 8, 32)
    high = _planes(blocks[:, 128:192], 32, 2).reshape(n, 8, 32)
    q = (low | (high << 4)).view(np.int8) - np.int8(32)
    return np.multiply(q.reshape(n, 16, 16), d, dtype=F32).reshape(n, QK_K)


BLOCK_DEQUANTIZERS: dict[GGMLQuantizationType, Callable[[np.ndarray], np.ndarray]] = {
    T.Q4_0: _q4_0,
    T.Q4_1: _q4_1,
    T.Q5_0: _q5_0,
    T.Q5_1: _q5_1,
    T.Q8_0: _q8_0,
    T.Q2_K: _q2_k,
    T.Q3_K: _q3_k,
    T.Q4_K: _q4_k,
    T.Q5_K: _q5_k,
    T.Q6_K: _q6_k,
}
FLOAT_TYPES = frozenset({T.F32, T.F16, T.BF16})
SUPPORTED_TYPES = FLOAT_TYPES | frozenset(BLOCK_DEQUANTIZERS)


def dequantize(
    raw: np.ndarray, ggml_type: GGMLQuantizationType, shape: tuple[int, ...], name: str = "?"
) -> np.ndarray:
    """Raw bytes of one tensor (1-D uint8) -> a new float32 array of `shape`."""
    if ggml_type in FLOAT_TYPES:
        return _float_values(raw, ggml_type).reshape(shape)
    dequantize_blocks = BLOCK_DEQUANTIZERS.get(ggml_type)
    if dequantize_blocks is None:
        supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
        raise ValueError(
            f"tensor {name!r} is stored as ggml type {ggml_type.name}, which warpserve cannot "
            f"dequantize (supported: {supported})"
        )
    block_size, block_bytes = GGML_QUANT_SIZES[ggml_type]
    blocks = raw.reshape(-1, block_bytes)
    if blocks.shape[0] <= CHUNK_BLOCKS:
        return dequantize_blocks(blocks).reshape(shape)
    out = np.empty((blocks.shape[0], block_size), dtype=F32)
    for start in range(0, blocks.shape[0], CHUNK_BLOCKS):
        out[start : start + CHUNK_BLOCKS] = dequantize_blocks(blocks[start : start + CHUNK_BLOCKS])
    return out.reshape(shape)


def _float_values(raw: np.ndarray, ggml_type: GGMLQuantizationType) -> np.ndarray:
    if ggml_type == T.F32:
        return raw.view(F32).copy()  # owned: never a view of the mapped file
    if ggml_type == T.F16:
        return raw.view(np.float16).astype(F32)
    # bfloat16 is the top half of a float32
    return (raw.view(np.uint16).astype(np.uint32) << 16).view(F32)
