"""Temperature, top-k, top-p and min-p keep exactly the tokens their definitions say."""

from __future__ import annotations

import math

import torch

from warpserve.request import SamplingParams
from warpserve.sampling.filters import (
    apply_temperature,
    min_p_cutoff,
    top_k_cutoff,
    top_p_cutoff,
    truncation_cutoffs,
)

INF = math.inf
# Probabilities 1/2, 1/4, 1/8, 1/8 in a shuffled id order.
DYADIC = [math.log(0.125), math.log(0.5), math.log(0.125), math.log(0.25)]


def kept(logits: torch.Tensor, cutoff: torch.Tensor) -> list[list[int]]:
    """The finite tokens at or above each row's cutoff."""
    rows = zip(logits.tolist(), cutoff.squeeze(1).tolist(), strict=True)
    return [[i for i, x in enumerate(row) if x >= c and x != -INF] for row, c in rows]


def no_floor(num_rows: int) -> torch.Tensor:
    return torch.full((num_rows, 1), -INF)


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[3.0, 1.0, 2.5, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    cutoff = top_k_cutoff(logits, torch.tensor([2, 4]))
    assert cutoff.tolist() == [[2.5], [1.0]]
    assert kept(logits, cutoff) == [[0, 2], [1, 2, 3, 4]]


def test_top_k_keeps_every_token_tied_with_the_kth():
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0]])
    assert kept(logits, top_k_cutoff(logits, torch.tensor([2]))) == [[0, 2, 3]]


def test_top_p_keeps_tokens_while_the_mass_before_them_is_below_top_p():
    logits = torch.tensor([DYADIC] * 4)
    cutoff = top_p_cutoff(logits, torch.tensor([[0.3], [0.6], [0.8], [0.99]]), no_floor(4))
    # Sorted: id 1 (0.5), id 3 (0.25), ids 0 and 2 (0.125 each, tied: kept together).
    assert kept(logits, cutoff) == [[1], [1, 3], [0, 1, 2, 3], [0, 1, 2, 3]]


def test_top_p_sees_the_distribution_left_by_top_k():
    logits = torch.tensor([DYADIC])
    # After top-k 2 the distribution is (2/3, 1/3): the mass before id 3 is 0.67 >= 0.6.
    floor = top_k_cutoff(logits, torch.tensor([2]))
    assert kept(logits, top_p_cutoff(logits, torch.tensor([[0.6]]), floor)) == [[1]]
    assert kept(logits, top_p_cutoff(logits, torch.tensor([[0.7]]), floor)) == [[1, 3]]


def test_top_p_head_tiers_equal_a_full_sort():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 500, generator=generator) * 2.0
    top_p = torch.linspace(0.05, 0.99, 16).unsqueeze(1)
    # Nuclei of 1 to 311 tokens: rows resolve at 4 candidates, at 40, and by a full sort.
    via_heads = top_p_cutoff(logits, top_p, no_floor(16), num_candidates=(4, 40))
    via_sort = top_p_cutoff(logits, top_p, no_floor(16), num_candidates=())
    assert torch.equal(via_heads, via_sort)
    assert kept(logits, via_sort) == reference_top_p(logits, top_p)


def reference_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> list[list[int]]:
    """The nucleus by its definition, one token at a time, in float64."""
    result = []
    for row, p in zip(logits.double().tolist(), top_p.squeeze(1).tolist(), strict=True):
        probs = torch.tensor(row, dtype=torch.float64).softmax(-1).tolist()
        order = sorted(range(len(row)), key=lambda i: -probs[i])
        mass, nucleus = 0.0, []
        for i in order:
            if mass >= p:
                break
            nucleus.append(i)
            mass += probs[i]
        result.append(sorted(nucleus))
    return result


def test_min_p_keeps_tokens_at_least_min_p_times_the_best():
    logits = torch.tensor([DYADIC] * 3)
    cutoff = min_p_cutoff(logits, torch.tensor([[0.3], [0.2], [1.0]]))
    # Thresholds: 0.15, 0.1 and 0.5 (only the best token).
    assert kept(logits, cutoff) == [[1, 3], [0, 1, 2, 3], [1]]


def test_temperature_divides_each_row_by_its_own():
    logits = torch.tensor([[2.0, -1.0]] * 3)
    params = [SamplingParams(temperature=t) for t in (0.5, 1.0, 4.0)]
    apply_temperature(logits, params)
    assert logits.tolist() == [[4.0, -2.0], [2.0, -1.0], [0.5, -0.25]]


def test_truncation_cutoffs_combine_only_the_filters_each_row_asks_for():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -INF]] * 6)
    params = [
        SamplingParams(),
        SamplingParams(top_k=2),
        SamplingParams(top_p=0.5),  # p(best) = 0.64
        SamplingParams(min_p=0.3),  # exp(-1) = 0.37 >= 0.3 > exp(-2)
        # After top-k: 0.67, 0.24, 0.09; top-p keeps all three, min-p drops the last.
        SamplingParams(top_k=3, top_p=0.95, min_p=0.2),
        SamplingParams(top_k=3, top_p=0.85),  # the mass before id 2 is 0.91
    ]
    cutoff = truncation_cutoffs(logits, params)
    assert kept(logits, cutoff) == [[0, 1, 2, 3], [0, 1], [0], [0, 1], [0, 1], [0, 1]]
