"""Each processor changes logits exactly as its formula says, on the rows that ask only."""

from __future__ import annotations

import math

import pytest
import torch

from tests.sampling.helpers import make_row
from warpserve.request import SamplingParams
from warpserve.sampling.processors import (
    apply_logit_bias,
    apply_min_tokens,
    apply_penalties,
    check_token_ids,
    penalize_presence_frequency,
    penalize_repetition,
    process_logits,
    token_pairs,
)

INF = math.inf


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    values = torch.tensor([2.0, -1.0, 0.5, -3.0, 0.0])
    penalty = torch.tensor([2.0, 2.0, 0.5, 0.5, 2.0])
    assert penalize_repetition(values, penalty).tolist() == [1.0, -2.0, 1.0, -1.5, 0.0]


def test_presence_frequency_subtract_count_times_frequency_plus_presence():
    values = torch.tensor([1.0, 1.0, 1.0])
    counts = torch.tensor([0.0, 2.0, 1.0])
    presence, frequency = torch.full((3,), 0.5), torch.full((3,), 0.25)
    # token 1: 1 - (2 * 0.25 + 0.5); token 2: 1 - (1 * 0.25 + 0.5); token 0 unseen
    result = penalize_presence_frequency(values, counts, presence, frequency)
    assert result.tolist() == [1.0, 0.0, 0.25]


def test_token_pairs_are_distinct_per_row_with_counts():
    rows, tokens, counts = token_pairs([[3, 1, 1], [], [0, 3]], [3, 0, 2], vocab_size=4)
    assert rows.tolist() == [0, 0, 2, 2]
    assert tokens.tolist() == [1, 3, 0, 3]
    assert counts.tolist() == [2.0, 1.0, 1.0, 1.0]
    assert token_pairs([[], []], [0, 0], vocab_size=2)[0].tolist() == []


def test_repetition_penalty_covers_prompt_and_output_tokens():
    logits = torch.tensor([[4.0, -4.0, 4.0, 4.0, -4.0]])
    rows = [make_row(prompt=[0, 1], output=[3], repetition_penalty=2.0)]
    apply_penalties(logits, rows)
    assert logits.tolist() == [[2.0, -8.0, 4.0, 2.0, -4.0]]


def test_presence_and_frequency_ignore_prompt_tokens():
    logits = torch.zeros(1, 4)
    rows = [make_row(prompt=[0, 2], output=[1, 1, 2], presence_penalty=1.0, frequency_penalty=0.5)]
    apply_penalties(logits, rows)
    # token 0 only in the prompt: untouched; token 1 twice in the output; token 2 once.
    assert logits.tolist() == [[0.0, -2.0, -1.5, 0.0]]


def test_negative_presence_and_frequency_raise_logits():
    logits = torch.zeros(1, 3)
    apply_penalties(logits, [make_row(output=[2], presence_penalty=-1.0, frequency_penalty=-2.0)])
    assert logits.tolist() == [[0.0, 0.0, 3.0]]


def test_penalties_touch_only_the_rows_that_set_them():
    logits = torch.full((3, 4), 2.0)
    rows = [
        make_row(output=[1]),
        make_row(output=[1], repetition_penalty=2.0),
        make_row(output=[1], frequency_penalty=1.0),
    ]
    apply_penalties(logits, rows)
    assert logits.tolist() == [[2.0] * 4, [2.0, 1.0, 2.0, 2.0], [2.0, 1.0, 2.0, 2.0]]


def test_repetition_then_presence_frequency_then_bias():
    logits = torch.tensor([[6.0, 0.0]])
    row = make_row(output=[0], repetition_penalty=2.0, presence_penalty=1.0, logit_bias={0: 0.5})
    process_logits(logits, [row], eos_token_ids=frozenset())
    # (6 / 2) - 1 + 0.5: the bias is added last, never scaled by the repetition penalty.
    assert logits.tolist() == [[2.5, 0.0]]


def test_logit_bias_adds_and_ignores_ids_beyond_the_vocabulary():
    logits = torch.zeros(2, 4)
    rows = [make_row(logit_bias={2: 5.0, 100: 3.0}), make_row(logit_bias={0: -100.0})]
    apply_logit_bias(logits, rows)
    assert logits.tolist() == [[0.0, 0.0, 5.0, 0.0], [-100.0, 0.0, 0.0, 0.0]]


def test_check_token_ids_rejects_ids_beyond_the_vocabulary():
    check_token_ids(SamplingParams(logit_bias={3: 1.0}, stop_token_ids=[3]), vocab_size=4)
    with pytest.raises(ValueError, match="logit_bias"):
        check_token_ids(SamplingParams(logit_bias={4: 1.0}), vocab_size=4)
    with pytest.raises(ValueError, match="stop_token_ids"):
        check_token_ids(SamplingParams(stop_token_ids=[9]), vocab_size=4)


def test_min_tokens_masks_eos_and_stop_ids_until_reached():
    logits = torch.zeros(4, 5)
    rows = [
        make_row(output=[0], min_tokens=2, stop_token_ids=[1]),  # below: mask 1 and EOS 4
        make_row(output=[0, 0], min_tokens=2, stop_token_ids=[1]),  # reached: no mask
        make_row(output=[], min_tokens=1, ignore_eos=True, stop_token_ids=[2]),  # EOS kept
        make_row(output=[], min_tokens=1, stop_token_ids=[7]),  # ids >= V are ignored
    ]
    apply_min_tokens(logits, rows, eos_token_ids=frozenset({4}))
    assert logits.tolist() == [
        [0.0, -INF, 0.0, 0.0, -INF],
        [0.0] * 5,
        [0.0, 0.0, -INF, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, -INF],
    ]


def test_min_tokens_mask_beats_a_positive_bias():
    logits = torch.zeros(1, 3)
    row = make_row(min_tokens=1, logit_bias={2: 100.0})
    process_logits(logits, [row], eos_token_ids=frozenset({2}))
    assert logits.tolist() == [[0.0, 0.0, -INF]]
