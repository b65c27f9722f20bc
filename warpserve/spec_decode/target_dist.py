"""The target's next-token choice or distribution at each verified position, exactly as
the sampler would see it: processors (penalties, logit_bias, min_tokens) first, then
temperature and the truncation filters.

Position i's row counts drafts 1..i as outputs, so penalties and min_tokens see the same
history as in non-speculative decoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from warpserve.sampling.draw import weights_
from warpserve.sampling.filters import apply_temperature, truncation_cutoffs
from warpserve.sampling.processors import needs_processing, process_logits
from warpserve.sampling.types import SamplingRow


def verify_rows(row: SamplingRow, draft_token_ids: list[int]) -> list[SamplingRow]:
    """One sampling row per verified position: [last token, d1, ..., dk] -> k + 1 rows."""
    outputs = list(row.output_token_ids)
    return [
        dataclasses.replace(row, output_token_ids=[*outputs, *draft_token_ids[:i]])
        for i in range(len(draft_token_ids) + 1)
    ]


def target_argmax(
    logits: torch.Tensor, rows: Sequence[SamplingRow], eos_token_ids: frozenset[int]
) -> list[int]:
    """logits [k + 1, V] raw -> the greedy token at each position."""
    if any(needs_processing(row) for row in rows):
        logits = logits.float().clone()
        process_logits(logits, rows, eos_token_ids)
    # torch.argmax returns the first maximal index: ties go to the lowest id, as in the sampler.
    return logits.argmax(dim=-1).tolist()


def target_probs(
    logits: torch.Tensor, rows: Sequence[SamplingRow], eos_token_ids: frozenset[int]
) -> torch.Tensor:
    """logits [k + 1, V] raw -> the distribution the sampler draws from, [k + 1, V]."""
    work = logits.float().clone()
    process_logits(work, rows, eos_token_ids)
    params = [row.params for row in rows]
    apply_temperature(work, params)
    weights = weights_(work, truncation_cutoffs(work, params))
    return weights / weights.sum(dim=-1, keepdim=True)
