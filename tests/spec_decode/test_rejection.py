"""Verification: greedy reproduces the target exactly; sampling emits each token with the
target's distribution (chi-square), and a known-wrong residual rule is caught."""

import pytest
import torch
from scipy.stats import chisquare

from warpserve.spec_decode import rejection
from warpserve.spec_decode.rejection import verify_greedy, verify_sampled

VOCAB = 6
NUM_TRIALS = 3000
P_VALUE = 1e-3


def test_greedy_accepts_the_matching_prefix_then_the_target() -> None:
    assert verify_greedy([4, 5, 6, 7], [4, 5, 6]) == [4, 5, 6, 7]
    assert verify_greedy([4, 5, 6, 7], [4, 9, 6]) == [4, 5]
    assert verify_greedy([4, 5, 6, 7], [1, 5, 6]) == [4]


def distributions(seed: int, num_drafts: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    p = torch.rand(num_drafts + 1, VOCAB, generator=generator) ** 2
    q = torch.rand(num_drafts, VOCAB, generator=generator) ** 2
    return p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)


def emitted_counts(p: torch.Tensor, q: torch.Tensor | None, fixed_draft: list[int] | None):
    """Counts of the token emitted at positions 0 and 1 over NUM_TRIALS verifications."""
    generator = torch.Generator().manual_seed(1)
    counts = torch.zeros(2, VOCAB)
    for _ in range(NUM_TRIALS):
        if q is None:
            drafts = fixed_draft
        else:
            drafts = torch.multinomial(q, 1, generator=generator).squeeze(1).tolist()
        out = verify_sampled(p, drafts, q, generator)
        for position, token in enumerate(out[:2]):
            counts[position, token] += 1
    return counts


def assert_matches(counts: torch.Tensor, probs: torch.Tensor) -> None:
    total = counts.sum()
    result = chisquare(counts.numpy(), (probs * total).numpy())
    assert result.pvalue > P_VALUE, (counts, probs * total)


@pytest.mark.parametrize("use_draft_probs", [True, False])
def test_sampled_tokens_follow_the_target(use_draft_probs: bool) -> None:
    p, q = distributions(seed=0, num_drafts=2)
    likely = [int(p[0].argmax()), int(p[1].argmax())]  # a lookup that is often right
    counts = emitted_counts(p, q if use_draft_probs else None, likely)
    assert counts[1].sum() > NUM_TRIALS / 5  # the second position was reached often
    assert_matches(counts[0], p[0])
    assert_matches(counts[1], p[1])


def test_a_wrong_residual_is_detected(monkeypatch) -> None:
    """Resampling from p instead of max(0, p - q) biases towards the draft: caught."""
    monkeypatch.setattr(rejection, "_residual", lambda p, draft_id, q: p)
    p, q = distributions(seed=0, num_drafts=2)
    counts = emitted_counts(p, q, None)
    result = chisquare(counts[0].numpy(), (p[0] * counts[0].sum()).numpy())
    assert result.pvalue < P_VALUE
