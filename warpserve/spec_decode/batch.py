"""Flat inputs and attention metadata for a drafting model's forward passes.

A drafter runs short chunks: one token per request while drafting, the accepted tokens
when catching up. Chunks of at most MAX_DECODE_ROWS tokens run as decode rows (each
token a query over the block table up to its own position), so all of them go through
one batched paged-decode call; only a long catch-up (a prompt) runs as a prefill chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from warpserve.layers.attention import AttentionMetadata, PrefillChunk

MAX_DECODE_ROWS = 16


@dataclass(frozen=True)
class Chunk:
    token_ids: list[int]
    start: int  # position of token_ids[0]; positions before it are in the K/V cache
    block_ids: list[int]  # covers start + len(token_ids) positions


@dataclass(frozen=True)
class StepInputs:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    meta: AttentionMetadata
    last_index: torch.Tensor  # [num chunks] int64: each chunk's last token, in chunk order


def build_inputs(chunks: list[Chunk], block_size: int, decode_kernel: object) -> StepInputs:
    """Decode-row chunks first (the attention layer expects them there), then prefills."""
    is_rows = [len(c.token_ids) <= MAX_DECODE_ROWS for c in chunks]
    order = [i for i, r in enumerate(is_rows) if r] + [i for i, r in enumerate(is_rows) if not r]
    token_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    tables: list[list[int]] = []
    context_lens: list[int] = []
    prefills: list[PrefillChunk] = []
    last_index = [0] * len(chunks)
    for i in order:
        chunk = chunks[i]
        span = range(chunk.start, chunk.start + len(chunk.token_ids))
        if is_rows[i]:
            tables.extend([chunk.block_ids] * len(span))
            context_lens.extend(p + 1 for p in span)
        else:
            table = torch.tensor(chunk.block_ids[: -(-span.stop // block_size)], dtype=torch.long)
            prefills.append(PrefillChunk(len(token_ids), len(span), chunk.start, table))
        token_ids.extend(chunk.token_ids)
        positions.extend(span)
        slots.extend(chunk.block_ids[p // block_size] * block_size + p % block_size for p in span)
        last_index[i] = len(token_ids) - 1
    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.long),
        num_decode_tokens=len(context_lens),
        **decode_tensors(tables, context_lens, block_size, decode_kernel is None),
        prefills=prefills,
        decode_kernel=decode_kernel,
    )
    return StepInputs(
        torch.tensor(token_ids, dtype=torch.long),
        torch.tensor(positions, dtype=torch.long),
        meta,
        torch.tensor(last_index, dtype=torch.long),
    )


def decode_tensors(
    tables: list[list[int]], context_lens: list[int], block_size: int, need_mask: bool
) -> dict[str, torch.Tensor | None]:
    """Block tables [B, max_blocks] (0-padded), context lengths [B], and for the portable
    path a mask [B, 1, 1, max_blocks * block_size] of the keys each row may see."""
    if not tables:
        return {
            "decode_block_tables": torch.empty(0, 1, dtype=torch.long),
            "decode_context_lens": torch.empty(0, dtype=torch.long),
            "decode_mask": None,
        }
    max_blocks = -(-max(context_lens) // block_size)
    padded = [t[:max_blocks] + [0] * (max_blocks - len(t[:max_blocks])) for t in tables]
    lens = torch.tensor(context_lens, dtype=torch.long)
    mask = None
    if need_mask:
        mask = (torch.arange(max_blocks * block_size)[None, :] < lens[:, None])[:, None, None, :]
    return {
        "decode_block_tables": torch.tensor(padded, dtype=torch.long),
        "decode_context_lens": lens,
        "decode_mask": mask,
    }
