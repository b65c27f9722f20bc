"""The sampler end to end: exact distributions, greedy, seeds, processors, logprobs."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from tests.sampling.helpers import make_row, softmax
from warpserve.sampling.sampler import Sampler

LOGITS = [2.0, 1.5, 1.0, 0.3, -0.5, -1.0]  # distinct, so no filter meets a tie
NUM_DRAWS = 10_000


def draw_counts(seed: int, **params: object) -> list[int]:
    """How often each token comes out in NUM_DRAWS independent draws (one batch)."""
    sampler = Sampler(len(LOGITS), frozenset(), seed=seed)
    logits = torch.tensor([LOGITS]).expand(NUM_DRAWS, -1).contiguous()
    tokens = sampler(logits, [make_row(**params)] * NUM_DRAWS)  # rows without a generator
    ids = torch.tensor([t.token_id for t in tokens])
    return torch.bincount(ids, minlength=len(LOGITS)).tolist()


def chi_square_p(counts: list[int], probs: list[float]) -> float:
    """p-value of counts under probs; tokens with zero probability must never appear."""
    assert all(c == 0 for c, p in zip(counts, probs, strict=True) if p == 0.0)
    support = [i for i, p in enumerate(probs) if p > 0.0]
    observed = [counts[i] for i in support]
    expected = [probs[i] * sum(observed) for i in support]
    return float(chisquare(observed, expected).pvalue)


def truncated(probs: list[float], keep: list[int]) -> list[float]:
    total = sum(probs[i] for i in keep)
    return [p / total if i in keep else 0.0 for i, p in enumerate(probs)]


def test_temperature_samples_softmax_of_scaled_logits():
    expected = softmax([x / 0.7 for x in LOGITS])
    assert chi_square_p(draw_counts(1, temperature=0.7), expected) > 1e-3


def test_chi_square_rejects_the_wrong_temperature():
    # The test above can fail: the same draws are far from the T = 1 distribution.
    assert chi_square_p(draw_counts(1, temperature=0.7), softmax(LOGITS)) < 1e-6


def test_top_k_samples_the_renormalised_k_best():
    expected = truncated(softmax(LOGITS), keep=[0, 1, 2])
    assert chi_square_p(draw_counts(2, top_k=3), expected) > 1e-3


def test_top_p_samples_the_renormalised_nucleus():
    probs = softmax(LOGITS)  # 0.44, 0.26, 0.16, 0.08, ...: mass before id 3 is 0.86
    expected = truncated(probs, keep=[0, 1, 2])
    assert chi_square_p(draw_counts(3, top_p=0.8), expected) > 1e-3


def test_min_p_samples_tokens_above_min_p_times_the_best():
    probs = softmax(LOGITS)
    keep = [i for i, p in enumerate(probs) if p >= 0.15 * max(probs)]
    assert keep == [0, 1, 2, 3]  # p / p_max: 1, 0.61, 0.37, 0.18, 0.08, 0.05
    assert chi_square_p(draw_counts(4, min_p=0.15), truncated(probs, keep)) > 1e-3


def test_filters_compose_in_order_temperature_top_k_top_p_min_p():
    scaled = softmax([x / 1.5 for x in LOGITS])
    after_k = truncated(scaled, keep=[0, 1, 2, 3, 4])
    # after top-k: 0.36, 0.26, 0.19, 0.12, 0.07; mass before id 4 is 0.93 >= 0.85
    after_p = truncated(after_k, keep=[0, 1, 2, 3])
    # after top-p, p / p_max: 1, 0.72, 0.51, 0.32: min-p 0.4 drops id 3
    expected = truncated(after_p, keep=[0, 1, 2])
    counts = draw_counts(5, temperature=1.5, top_k=5, top_p=0.85, min_p=0.4)
    assert chi_square_p(counts, expected) > 1e-3


def test_greedy_is_the_argmax_and_ties_go_to_the_lowest_id():
    logits = torch.randn(5, 50, generator=torch.Generator().manual_seed(0))
    logits[0, 7] = logits[0, 30] = logits[0].max() + 1.0
    rows = [make_row(temperature=0.0) for _ in range(5)]
    tokens = Sampler(50, frozenset())(logits, rows)
    assert [t.token_id for t in tokens] == logits.argmax(-1).tolist()
    assert tokens[0].token_id == 7
    assert tokens[1].logprob is None and tokens[1].top_logprobs is None


def test_processed_greedy_ties_also_go_to_the_lowest_id():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0]])
    rows = [make_row(temperature=0.0, logit_bias={0: 1.0})]
    assert Sampler(4, frozenset())(logits, rows)[0].token_id == 1


def test_the_callers_logits_are_never_modified():
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(1))
    before = logits.clone()
    rows = [
        make_row(temperature=0.0, logit_bias={3: 50.0}),
        make_row(temperature=0.5, top_k=2, top_p=0.5, min_p=0.1, repetition_penalty=1.5),
        make_row(temperature=0.0),
    ]
    Sampler(20, frozenset({0}))(logits, rows)
    assert torch.equal(logits, before)


def run_steps(sampler: Sampler, rows: list, target: int, num_steps: int = 15) -> list[int]:
    """Tokens of rows[target] over several steps of fresh random logits."""
    logits_gen = torch.Generator().manual_seed(42)
    tokens = []
    for _ in range(num_steps):
        logits = torch.randn(len(rows), 1000, generator=logits_gen)
        logits[target] = torch.randn(1000, generator=torch.Generator().manual_seed(len(tokens)))
        tokens.append(sampler(logits, rows)[target].token_id)
    return tokens


def test_a_seed_reproduces_its_tokens():
    first = run_steps(Sampler(1000, frozenset(), seed=1), [make_row(seed=7, top_p=0.95)], 0)
    again = run_steps(Sampler(1000, frozenset(), seed=2), [make_row(seed=7, top_p=0.95)], 0)
    other = run_steps(Sampler(1000, frozenset(), seed=1), [make_row(seed=8, top_p=0.95)], 0)
    assert first == again
    assert first != other


def test_a_seeded_rows_tokens_do_not_depend_on_the_rest_of_the_batch():
    alone = run_steps(Sampler(1000, frozenset()), [make_row(seed=7, top_k=50)], 0)
    batch = [
        make_row(),  # unseeded: draws from the default generator
        make_row(seed=3, temperature=0.5, top_p=0.9),
        make_row(temperature=0.0, repetition_penalty=1.2, output=[1, 2]),
        make_row(seed=7, top_k=50),
        make_row(seed=9, min_p=0.1, logprobs=5),
    ]
    assert run_steps(Sampler(1000, frozenset()), batch, target=3) == alone


def test_logit_bias_steers_the_token():
    logits = torch.tensor([[5.0, 0.0, 0.0, 0.0]])
    sampler = Sampler(4, frozenset())
    assert sampler(logits, [make_row(temperature=0.0, logit_bias={2: 6.0})])[0].token_id == 2
    assert sampler(logits, [make_row(temperature=0.0, logit_bias={9: 99.0})])[0].token_id == 0


def test_min_tokens_masks_eos_until_reached():
    logits = torch.tensor([[0.0, 1.0, 9.0]])
    sampler = Sampler(3, frozenset({2}), seed=0)
    below = make_row(temperature=0.0, min_tokens=2, output=[1])
    assert sampler(logits, [below])[0].token_id == 1
    reached = make_row(temperature=0.0, min_tokens=2, output=[1, 1])
    assert sampler(logits, [reached])[0].token_id == 2


def test_min_tokens_keeps_a_likely_eos_out_of_random_draws():
    logits = torch.tensor([[0.0, 1.0, 9.0]]).expand(200, -1)  # unmasked, p(EOS) = 0.9995
    tokens = Sampler(3, frozenset({2}), seed=0)(logits, [make_row(min_tokens=1)] * 200)
    assert {t.token_id for t in tokens} == {0, 1}


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_logprobs_are_the_raw_log_softmax(temperature: float):
    logits = torch.randn(2, 30, generator=torch.Generator().manual_seed(3))
    rows = [
        make_row(seed=1, temperature=temperature, top_k=3, repetition_penalty=2.0, logprobs=5),
        make_row(seed=2, temperature=temperature, output=[4], logprobs=0),
    ]
    tokens = Sampler(30, frozenset())(logits, rows)
    expected = torch.log_softmax(logits, dim=-1)
    for row, token in enumerate(tokens):
        assert token.logprob == expected[row, token.token_id].item()
    values, ids = expected[0].topk(5)
    assert tokens[0].top_logprobs == list(zip(ids.tolist(), values.tolist(), strict=True))
    assert tokens[1].top_logprobs == []


def test_top_logprobs_are_sorted_with_ties_by_id():
    logits = torch.tensor([[0.0, 2.0, 1.0, 2.0, -1.0]])
    token = Sampler(5, frozenset())(logits, [make_row(temperature=0.0, logprobs=4)])[0]
    lp = torch.log_softmax(logits[0], dim=-1).tolist()
    assert token.top_logprobs == [(1, lp[1]), (3, lp[3]), (2, lp[2]), (0, lp[0])]
    assert token.token_id == 1 and token.logprob == lp[1]


def test_logprobs_beyond_a_tiny_vocabulary_list_every_token():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    token = Sampler(3, frozenset())(logits, [make_row(temperature=0.0, logprobs=20)])[0]
    assert [token_id for token_id, _ in token.top_logprobs] == [2, 1, 0]
