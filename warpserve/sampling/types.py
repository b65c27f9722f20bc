"""The boundary between the model runner and the sampler."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from warpserve.request import SamplingParams


@dataclass
class SamplingRow:
    """One row of the logits matrix and everything needed to sample from it."""

    params: SamplingParams
    generator: torch.Generator | None  # per-request, seeded: same seed => same tokens
    prompt_token_ids: Sequence[int]
    output_token_ids: Sequence[int]
    # Keys the row's grammar matcher (sampling/grammar.py); None: keyed by output_token_ids.
    request_id: str | None = None


@dataclass(frozen=True)
class SampledToken:
    token_id: int
    logprob: float | None  # of the chosen token under the model's raw distribution
    top_logprobs: list[tuple[int, float]] | None  # (token id, logprob), best first
