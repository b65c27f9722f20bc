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
    for _ in range(30):
        observed.observe(9, 2 * CPU.seconds_for(9))  # long contexts: verify steps cost 2x
    assert observed.seconds_for(9) == pytest.approx(2 * CPU.seconds_for(9), rel=1e-3)
    assert observed.seconds_for(64) == pytest.approx(2 * CPU.seconds_for(64), rel=1e-3)
    observed.observe(1, CPU.seconds_for(1))  # plain decodes as measured at start-up
    assert observed.seconds_for(1) == pytest.approx(CPU.seconds_for(1))
    assert observed.seconds_for(2) == pytest.approx(CPU.seconds_for(2))  # nearest: 1


def test_expensive_verify_steps_turn_auto_off() -> None:
    p = with_rate(policy(), 2)
    assert p.num_drafts("r", 8, batch_size=8, draft_s=0.0) > 0
    p.step_cost.observe(8, CPU.seconds_for(8))  # plain steps cost what start-up measured
    for num_tokens in (16, 32, 64, 128):
        for _ in range(30):
            p.step_cost.observe(num_tokens, 3 * CPU.seconds_for(num_tokens))
    assert p.num_drafts("r", 8, batch_size=8, draft_s=0.0) == 0
