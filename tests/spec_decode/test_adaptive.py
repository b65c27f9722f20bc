"""The draft-length policy over a measured, concave CPU step-cost curve: long drafts for
predictable text, none for unpredictable text under auto (with probes), and drafting
stops once the batch is large enough to be compute-bound."""

import pytest

from warpserve.spec_decode.adaptive import (
    Acceptance,
    DraftLengthPolicy,
    ObservedStepCost,
    StepCost,
    expected_tokens,
)

# Measured on the 2-vCPU EPYC with SmolLM2-135M (ms): two tokens cost twice one, 64
# cost seven times one.
CPU = StepCost(
    (1, 2, 4, 8, 16, 32, 64, 128),
    (0.065, 0.120, 0.150, 0.180, 0.210, 0.290, 0.460, 0.910),
)


def policy(can_skip: bool = True, adaptive: bool = True) -> DraftLengthPolicy:
    return DraftLengthPolicy(8, adaptive, can_skip, CPU)


def with_rate(p: DraftLengthPolicy, accepted_of_5: int) -> DraftLengthPolicy:
    for _ in range(20):
        p.observe("r", 5, accepted_of_5)
    return p


def test_step_cost_interpolates_and_extrapolates() -> None:
    assert CPU.seconds_for(1) == pytest.approx(0.065)
    assert CPU.seconds_for(3) == pytest.approx(0.135)
    assert CPU.seconds_for(256) == pytest.approx(0.910 + 128 * 0.45 / 64)
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)
    assert expected_tokens(1.0, 4) == 5


def test_predictable_text_drafts_long_single_stream() -> None:
    p = with_rate(policy(), 5)  # everything accepted
    assert p.num_drafts("r", 8, batch_size=1, draft_s=0.0) == 8
    assert p.num_drafts("r", 3, batch_size=1, draft_s=0.0) == 3  # the request's cap


def test_one_draft_does_not_pay_where_two_tokens_cost_two() -> None:
    num, gain = policy().best_num_drafts(0.5, 1, batch_size=1, draft_s=0.0)
    assert num == 1 and gain < 1.0


def test_auto_stops_on_unpredictable_text_but_probes() -> None:
    p = with_rate(policy(), 0)
    decisions = [p.num_drafts("r", 8, batch_size=1, draft_s=0.0) for _ in range(32)]
    assert sum(d > 0 for d in decisions) == 32 // DraftLengthPolicy.PROBE_INTERVAL


def test_batch_of_8_drafts_more_cheaply_and_a_large_batch_stops() -> None:
    p = with_rate(policy(), 2)  # a rate of about 0.65
    single = p.best_num_drafts(p.acceptance_rate("r"), 8, 1, 0.0)
    eight = p.best_num_drafts(p.acceptance_rate("r"), 8, 8, 0.0)
    assert eight[1] > single[1]
    assert p.num_drafts("r", 8, batch_size=8, draft_s=0.0) > 0
    assert p.num_drafts("r", 8, batch_size=128, draft_s=0.0) == 0


def test_explicit_methods_always_draft_and_fixed_uses_the_maximum() -> None:
    p = with_rate(policy(can_skip=False), 0)
    assert p.num_drafts("r", 8, batch_size=64, draft_s=0.0) >= 1
    assert policy(can_skip=False, adaptive=False).num_drafts("r", 5, 64, 0.0) == 5


def test_expensive_drafter_drafts_less() -> None:
    p = with_rate(policy(can_skip=False), 4)
    cheap = p.num_drafts("r", 8, batch_size=1, draft_s=0.0)
    costly = p.num_drafts("r", 8, batch_size=1, draft_s=0.05)
    assert cheap > costly >= 1


def test_acceptance_counts_only_tried_drafts() -> None:
    acceptance = Acceptance(prior_rate=0.8)
    for _ in range(50):
        acceptance.observe(num_drafts=5, num_accepted=1)  # 1 accepted, 1 rejected, 3 untried
    # Decayed sums converge to 1 / (1 - DECAY) = 5 accepted of 10 tried, plus the prior.
    prior = Acceptance.PRIOR_WEIGHT
    assert acceptance.rate == pytest.approx((5 + 0.8 * prior) / (10 + prior), abs=1e-3)


def test_observed_steps_correct_the_start_up_curve() -> None:
    observed = ObservedStepCost(CPU)
    assert observed.seconds_for(9) == pytest.approx(CPU.seconds_for(9))
    for _ in range(60):  # a fixed 10 ms per step that start-up did not see
        for num_tokens in (1, 5, 9):
            observed.observe(num_tokens, CPU.seconds_for(num_tokens) + 0.010)
    for num_tokens in (1, 2, 9, 64):
        assert observed.seconds_for(num_tokens) == pytest.approx(
            CPU.seconds_for(num_tokens) + 0.010, rel=1e-3
        )
    for _ in range(60):  # and 2 ms per row: attention over long contexts
        for num_tokens in (1, 5, 9):
            observed.observe(num_tokens, CPU.seconds_for(num_tokens) + 0.010 + 0.002 * num_tokens)
    # The ridge shrinks the per-row term a little; it is still most of it.
    assert observed.correction()[1] == pytest.approx(0.002, rel=0.3)
    assert observed.seconds_for(64) > CPU.seconds_for(64) + 0.010 + 0.001 * 64


def test_one_slow_step_does_not_lock_in_short_drafts() -> None:
    """A slow outlier at one size shifts every size's prediction alike, and fades: the
    policy goes back to long drafts (a per-size correction stayed stuck at one draft,
    since the slow size was never run again)."""
    p = with_rate(policy(can_skip=False), 5)
    assert p.num_drafts("r", 8, batch_size=1, draft_s=0.0) == 8
    p.step_cost.observe(9, 10 * CPU.seconds_for(9))  # a pause: clipped to 3x
    for _ in range(40):
        num = p.num_drafts("r", 8, batch_size=1, draft_s=0.0)
        p.step_cost.observe(1 + num, CPU.seconds_for(1 + num))
    assert p.num_drafts("r", 8, batch_size=1, draft_s=0.0) == 8


def test_expensive_verify_rows_shorten_drafts() -> None:
    p = with_rate(policy(), 3)  # a rate of about 0.76
    before = p.num_drafts("r", 8, batch_size=8, draft_s=0.0)
    # Every row costs 12 ms more than at start-up (attention over long contexts): the
    # rows a draft adds to a batch of 8 are dearer, so fewer drafts pay.
    for _ in range(10):
        for num_tokens in (8, 16, 32, 64):
            p.step_cost.observe(num_tokens, CPU.seconds_for(num_tokens) + 0.012 * num_tokens)
    assert p.step_cost.correction()[1] == pytest.approx(0.012, rel=0.1)
    assert 0 < p.num_drafts("r", 8, batch_size=8, draft_s=0.0) < before
