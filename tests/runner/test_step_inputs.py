"""The one step-input builder (execution/inputs.py) and the executor's reordering of a
mixed step: exact positions, slots, block tables and logit rows for a hand-made batch."""

from __future__ import annotations

import torch

from warpserve.execution.executor import _in_chunk_order
from warpserve.execution.inputs import Chunk, build_step_inputs

BLOCK = 4


def _mixed() -> list[Chunk]:
    return [
        # A prompt chunk with 2 tokens of earlier context, blocks 7 and 3.
        Chunk([11, 12, 13], 2, [7, 3], is_decode_rows=False, num_logits=1),
        Chunk([21], 5, [1, 2], is_decode_rows=True),  # a plain decode at position 5
        # A verification: [last, d1, d2] as rows at 8..10, logits for all three.
        Chunk([31, 32, 33], 8, [4, 5, 6], is_decode_rows=True, num_logits=3),
    ]


def test_decode_rows_go_first_and_logit_rows_keep_chunk_order() -> None:
    inputs = build_step_inputs(_mixed(), BLOCK)
    assert inputs.input_ids.tolist() == [21, 31, 32, 33, 11, 12, 13]
    assert inputs.positions.tolist() == [5, 8, 9, 10, 2, 3, 4]
    # slot = block_ids[p // 4] * 4 + p % 4
    assert inputs.meta.slot_mapping.tolist() == [9, 24, 25, 26, 30, 31, 12]
    assert inputs.logit_rows.tolist() == [6, 0, 1, 2, 3]  # A's last, B, then C's three
    assert not inputs.is_decode_only


def test_decode_tables_are_cut_to_the_longest_context_and_padded() -> None:
    meta = build_step_inputs(_mixed(), BLOCK).meta
    assert meta.num_decode_tokens == 4
    assert meta.decode_context_lens.tolist() == [6, 9, 10, 11]
    assert meta.decode_block_tables.tolist() == [[1, 2, 0], [4, 5, 6], [4, 5, 6], [4, 5, 6]]
    (prefill,) = meta.prefills
    assert (prefill.token_start, prefill.num_tokens, prefill.num_computed_tokens) == (4, 3, 2)
    assert prefill.block_table.tolist() == [7, 3]


def test_no_decode_rows() -> None:
    inputs = build_step_inputs([Chunk([1, 2], 0, [0], is_decode_rows=False, num_logits=0)], 4)
    assert inputs.meta.decode_block_tables.shape == (0, 1)
    assert inputs.logit_rows.tolist() == []


def test_a_split_step_comes_back_in_chunk_order() -> None:
    chunks = _mixed()  # prefill first: the fused rows (B, C) come back before A's row
    logits = torch.tensor([[1.0], [2.0], [3.0], [4.0], [0.0]])  # B, C x3, then A
    assert _in_chunk_order(logits, chunks).flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    decode_first = [chunks[1], chunks[2], chunks[0]]
    assert _in_chunk_order(logits, decode_first) is logits
