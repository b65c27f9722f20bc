"""The one builder of a forward pass's inputs: chunks of tokens -> flat tensors, the
attention metadata and the rows whose logits are wanted.

Every caller describes its work as chunks (the target's scheduled sequences, a drafter's
catch-up and draft tokens, the start-up cost measurement), so the slot mapping, the block
tables and their padding are computed in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from warpserve.layers.attention import AttentionMetadata, PrefillChunk


@dataclass(frozen=True)
class Chunk:
    """Consecutive tokens of one sequence, run in one forward pass."""

    token_ids: Sequence[int]
    start: int  # position of token_ids[0]; positions before it are in the K/V cache
    block_ids: Sequence[int]  # the block table, covering start + len(token_ids) positions
    # Decode rows: each token is a query over the block table up to its own position (a
    # decode, a draft verification, a short catch-up); else one causal prefill chunk.
    is_decode_rows: bool
    num_logits: int = 1  # logits are wanted for the last num_logits tokens

    def as_decode_rows(self) -> Chunk:
        return replace(self, is_decode_rows=True)


@dataclass(frozen=True)
class StepInputs:
    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    meta: AttentionMetadata
    logit_rows: torch.Tensor  # [R] int64: rows of the flat batch, in chunk order

    @property
    def is_decode_only(self) -> bool:
        return self.meta.num_decode_tokens == len(self.input_ids)


def build_step_inputs(chunks: Sequence[Chunk], block_size: int) -> StepInputs:
    """Decode-row chunks go first in the flat batch (the attention layer batches them into
    one call), then prefill chunks; `logit_rows` keep the order of `chunks`."""
    order = [i for i, c in enumerate(chunks) if c.is_decode_rows]
    order += [i for i, c in enumerate(chunks) if not c.is_decode_rows]
    token_ids: list[int] = []
    positions: list[int] = []
    slots: list[int] = []
    tables: list[Sequence[int]] = []
    context_lens: list[int] = []
    prefills: list[PrefillChunk] = []
    logit_rows: list[range] = [range(0)] * len(chunks)
    for i in order:
        chunk = chunks[i]
        span = range(chunk.start, chunk.start + len(chunk.token_ids))
        if chunk.is_decode_rows:
            tables.extend([chunk.block_ids] * len(span))
            context_lens.extend(p + 1 for p in span)
        else:
            table = torch.tensor(chunk.block_ids[: -(-span.stop // block_size)], dtype=torch.long)
            prefills.append(PrefillChunk(len(token_ids), len(span), chunk.start, table))
        token_ids.extend(chunk.token_ids)
        positions.extend(span)
        slots.extend(chunk.block_ids[p // block_size] * block_size + p % block_size for p in span)
        logit_rows[i] = range(len(token_ids) - chunk.num_logits, len(token_ids))
    block_tables, lens = _decode_tables(tables, context_lens, block_size)
    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.long),
        num_decode_tokens=len(context_lens),
        decode_block_tables=block_tables,
        decode_context_lens=lens,
        prefills=prefills,
    )
    return StepInputs(
        torch.tensor(token_ids, dtype=torch.long),
        torch.tensor(positions, dtype=torch.long),
        meta,
        torch.tensor([row for rows in logit_rows for row in rows], dtype=torch.long),
    )


def _decode_tables(
    tables: list[Sequence[int]], context_lens: list[int], block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Block tables [B, max_blocks] (cut to the longest context, 0-padded) and context
    lengths [B], each including its row's own token."""
    if not tables:
        return torch.empty(0, 1, dtype=torch.long), torch.empty(0, dtype=torch.long)
    max_blocks = -(-max(context_lens) // block_size)
    padded = []
    for table in tables:
        row = list(table[:max_blocks])
        padded.append(row + [0] * (max_blocks - len(row)))
    return torch.tensor(padded, dtype=torch.long), torch.tensor(context_lens, dtype=torch.long)
