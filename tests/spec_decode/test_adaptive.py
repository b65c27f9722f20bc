"""The draft-length policy: long drafts when a single stream is bound by reading the
weights, none in a compute-bound batch or at low acceptance (auto), probes while off."""

from warpserve.spec_decode.adaptive import Acceptance, DraftLengthPolicy, StepCost

# A CPU decode: reading the weights costs 30 units, each token in the step 1 more.
CPU = StepCost(fixed_s=0.030, per_token_s=0.001)


def policy(can_skip: bool, adaptive: bool = True) -> DraftLengthPolicy:
    return DraftLengthPolicy(8, adaptive, can_skip, CPU)


def observe(p: DraftLengthPolicy, rid: str, num_drafts: int, num_accepted: int, times: int):
    for _ in range(times):
        p.observe(rid, num_drafts, num_accepted)


def test_high_acceptance_single_stream_drafts_long() -> None:
    p = policy(can_skip=True)
    observe(p, "r", 8, 8, times=10)
    assert p.num_drafts("r", 8, batch_num_tokens=1, draft_s=0.0) == 8
    assert p.num_drafts("r", 3, batch_num_tokens=1, draft_s=0.0) == 3  # the request's cap


def test_compute_bound_batch_turns_auto_off() -> None:
    p = policy(can_skip=True)
    observe(p, "r", 4, 2, times=10)  # rate about 2/3
    assert p.num_drafts("r", 8, batch_num_tokens=1, draft_s=0.0) >= 4
    assert p.num_drafts("r", 8, batch_num_tokens=256, draft_s=0.0) == 0


def test_low_acceptance_turns_auto_off_but_probes() -> None:
    p = policy(can_skip=True)
    observe(p, "r", 4, 0, times=10)
    decisions = [p.num_drafts("r", 8, batch_num_tokens=8, draft_s=0.0) for _ in range(32)]
    assert decisions.count(1) == 32 // DraftLengthPolicy.PROBE_INTERVAL
    assert set(decisions) == {0, 1}


def test_fixed_methods_always_draft_and_non_adaptive_uses_the_maximum() -> None:
    p = policy(can_skip=False)
    observe(p, "r", 4, 0, times=10)
    assert p.num_drafts("r", 8, batch_num_tokens=64, draft_s=0.0) == 1
    assert policy(can_skip=False, adaptive=False).num_drafts("r", 5, 64, 0.0) == 5


def test_expensive_drafter_drafts_less() -> None:
    p = policy(can_skip=True)
    observe(p, "r", 4, 3, times=10)
    cheap = p.num_drafts("r", 8, batch_num_tokens=1, draft_s=0.0)
    costly = p.num_drafts("r", 8, batch_num_tokens=1, draft_s=0.015)
    assert cheap > costly >= 1


def test_acceptance_counts_only_tried_drafts() -> None:
    acceptance = Acceptance()
    for _ in range(50):
        acceptance.observe(num_drafts=5, num_accepted=1)  # 1 accepted, 1 rejected, 3 untried
    assert abs(acceptance.rate - 0.5) < 0.02
