"""The two-level inverse-CDF draw returns exactly the token whose interval holds u."""

from __future__ import annotations

import math

import pytest
import torch

from warpserve.sampling.draw import sample_from_logits

INF = math.inf


def interval_midpoints(logits: torch.Tensor, cutoff: float) -> tuple[list[int], torch.Tensor]:
    """Each token kept by the cutoff and the u at the middle of its CDF interval."""
    kept = logits.double().masked_fill(logits < cutoff, -INF)
    probs = torch.softmax(kept, dim=-1)
    upper = probs.cumsum(dim=-1)
    middle = (upper - probs / 2) / upper[-1]
    tokens = [i for i in range(len(probs)) if probs[i] > 0]
    return tokens, middle[tokens]


@pytest.mark.parametrize("cutoff", [-INF, 0.0])
@pytest.mark.parametrize("block_size", [4, 8, 256])
def test_every_token_is_drawn_exactly_in_its_own_interval(block_size: int, cutoff: float):
    logits = torch.randn(37, generator=torch.Generator().manual_seed(0))  # 37: a short last block
    logits[[3, 8, 9, 10, 11, 36]] = -INF  # one whole block of 4 masked, and the last token
    tokens, uniforms = interval_midpoints(logits, cutoff)
    assert len(tokens) == (31 if cutoff == -INF else 16)
    rows = logits.expand(len(tokens), -1).clone()
    cutoffs = torch.full((len(tokens), 1), cutoff)
    drawn = sample_from_logits(rows, uniforms, cutoffs, block_size=block_size)
    assert drawn.tolist() == tokens


def test_the_interval_ends_never_reach_a_masked_token():
    logits = torch.tensor([[-INF, 0.0, -INF, 0.0, -INF, -INF]] * 3)
    uniforms = torch.tensor([0.0, 0.5, 1.0 - 2**-53], dtype=torch.float64)
    assert sample_from_logits(logits, uniforms, block_size=2).tolist() == [1, 3, 3]


def test_a_rare_token_beside_a_likely_one_keeps_its_probability():
    logits = torch.tensor([[0.0, -20.0, -INF]])  # p(1) = 2e-9: below float32 resolution at 1
    p_rare = math.exp(-20.0) / (1 + math.exp(-20.0))
    uniforms = torch.tensor([1.0 - p_rare / 2], dtype=torch.float64)
    assert sample_from_logits(logits.clone(), uniforms).tolist() == [1]
    uniforms = torch.tensor([1.0 - p_rare * 1.5], dtype=torch.float64)
    assert sample_from_logits(logits.clone(), uniforms).tolist() == [0]


def test_logits_far_below_the_best_are_raised_to_the_floor_only():
    # exp(-1000) underflows; the floor gives token 0 the interval [0, 1.8e-35) of u,
    # while the -inf token keeps none.
    logits = torch.tensor([[-1000.0, 0.0, -INF]] * 3)
    uniforms = torch.tensor([0.0, 1e-30, 1.0 - 2**-53], dtype=torch.float64)
    assert sample_from_logits(logits, uniforms).tolist() == [0, 1, 1]
