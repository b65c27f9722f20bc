"""Paged attention on CPU: K/V live in fixed-size blocks, read through block tables.

One step's tokens arrive flattened ([T, ...]): first the decode rows (one query each),
batched into one call of the decode attention the model was built with (`DecodeAttention`:
the C++ paged kernel that reads K/V in place, layers/paged_kernel.py, or `sdpa_decode`, one
scaled_dot_product_attention over K/V gathered through the block tables); then the prefill
chunks, one call each (a chunk with no earlier context attends to its own K/V directly,
causally). The measurements behind this choice are in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PrefillChunk:
    token_start: int  # index of the chunk's first token in the flat batch
    num_tokens: int
    num_computed_tokens: int  # context already in the cache before this chunk
    block_table: torch.Tensor  # [num_blocks] int64, covers num_computed_tokens + num_tokens


@dataclass(frozen=True)
class AttentionMetadata:
    """Built for one step (execution/inputs.py); handed to every attention layer."""

    slot_mapping: torch.Tensor  # [T] int64: block_id * block_size + offset of each token
    num_decode_tokens: int  # the first num_decode_tokens tokens are decode rows
    decode_block_tables: torch.Tensor  # [B, max_blocks] int64, padded with 0
    decode_context_lens: torch.Tensor  # [B] int64, including this step's token
    prefills: list[PrefillChunk]


# (q [B, Hq, D], kv_cache [2, num_blocks, block_size, Hkv, D], meta, scale) -> [B, Hq, D]
DecodeAttention = Callable[[torch.Tensor, torch.Tensor, AttentionMetadata, float], torch.Tensor]


def write_kv(
    kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """kv_cache [2, num_blocks, block_size, Hkv, D]; k, v [T, Hkv, D]."""
    num_kv_heads, head_dim = k.shape[1], k.shape[2]
    kv_cache[0].view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, k)
    kv_cache[1].view(-1, num_kv_heads, head_dim).index_copy_(0, slot_mapping, v)


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    decode_attention: DecodeAttention,
) -> torch.Tensor:
    """q [T, Hq, D], k/v [T, Hkv, D] (this step's, already rotated) -> out [T, Hq, D]."""
    write_kv(kv_cache, k, v, meta.slot_mapping)
    out = torch.empty_like(q)
    num_decodes = meta.num_decode_tokens
    if num_decodes:
        out[:num_decodes] = decode_attention(q[:num_decodes], kv_cache, meta, scale)
    for chunk in meta.prefills:
        span = slice(chunk.token_start, chunk.token_start + chunk.num_tokens)
        out[span] = _prefill_attention(q[span], k[span], v[span], kv_cache, chunk, scale)
    return out


def sdpa_decode(
    q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """The portable decode attention: K/V gathered through the block tables (a copy the
    C++ kernel avoids), then one masked scaled_dot_product_attention."""
    num_seqs, max_blocks = meta.decode_block_tables.shape
    block_size, num_kv_heads, head_dim = kv_cache.shape[2:]
    keys = kv_cache[0][meta.decode_block_tables]  # [B, max_blocks, block_size, Hkv, D]
    values = kv_cache[1][meta.decode_block_tables]
    keys = keys.view(num_seqs, max_blocks * block_size, num_kv_heads, head_dim).transpose(1, 2)
    values = values.view(num_seqs, max_blocks * block_size, num_kv_heads, head_dim).transpose(1, 2)
    # Row b sees the first context_lens[b] keys of its padded table: [B, 1, 1, S].
    mask = torch.arange(max_blocks * block_size)[None, :] < meta.decode_context_lens[:, None]
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2),  # [B, Hq, 1, D]
        keys,  # [B, Hkv, S, D]
        values,
        attn_mask=mask[:, None, None, :],
        scale=scale,
        enable_gqa=True,
    )
    return out.squeeze(2)  # [B, Hq, D]


def _prefill_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_cache: torch.Tensor,
    chunk: PrefillChunk,
    scale: float,
) -> torch.Tensor:
    if chunk.num_computed_tokens == 0:
        keys, values, mask, causal = k, v, None, True
    else:
        num_kv_heads, head_dim = k.shape[1], k.shape[2]
        context_len = chunk.num_computed_tokens + chunk.num_tokens
        keys = kv_cache[0][chunk.block_table].view(-1, num_kv_heads, head_dim)[:context_len]
        values = kv_cache[1][chunk.block_table].view(-1, num_kv_heads, head_dim)[:context_len]
        # Query i sits at position num_computed_tokens + i and sees keys 0..that position.
        query_pos = torch.arange(chunk.num_tokens) + chunk.num_computed_tokens
        mask = torch.arange(context_len)[None, :] <= query_pos[:, None]  # [L, S]
        causal = False
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1).unsqueeze(0),  # [1, Hq, L, D]
        keys.transpose(0, 1).unsqueeze(0),  # [1, Hkv, S, D]
        values.transpose(0, 1).unsqueeze(0),
        attn_mask=mask,
        is_causal=causal,
        scale=scale,
        enable_gqa=True,
    )
    return out.squeeze(0).transpose(0, 1)  # [L, Hq, D]
