"""Run the native model on whole sequences without the scheduler: for parity tests."""

from __future__ import annotations

import torch

from warpserve.layers.attention import AttentionMetadata, PrefillChunk


def prefill_logits(model, token_ids: list[int], block_size: int = 4) -> torch.Tensor:
    """Logits [T, vocab] for one sequence, every position, through the paged path."""
    num_blocks = -(-len(token_ids) // block_size)
    kv_caches = [
        torch.zeros(2, num_blocks, block_size, model.num_kv_heads, model.head_dim)
        for _ in range(model.num_layers)
    ]
    table = torch.arange(num_blocks)
    meta = AttentionMetadata(
        slot_mapping=torch.arange(len(token_ids)),
        num_decode_tokens=0,
        decode_block_tables=torch.empty(0, 1, dtype=torch.long),
        decode_context_lens=torch.empty(0, dtype=torch.long),
        prefills=[PrefillChunk(0, len(token_ids), 0, table)],
    )
    with torch.inference_mode():
        hidden = model(torch.tensor(token_ids), torch.arange(len(token_ids)), kv_caches, meta)
        return model.compute_logits(hidden)
