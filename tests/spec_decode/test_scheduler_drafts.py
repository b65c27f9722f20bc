"""The scheduler with draft tokens, against a scripted fake model: outputs equal plain
decoding whatever is accepted, rejected K/V never enter the prefix cache, lookahead
slots always cover what a drafter writes, and every block comes back."""

import random

import pytest

from tests.scheduler.test_scheduler_fake_model import (
    BLOCK_SIZE,
    MAX_MODEL_LEN,
    VOCAB_SIZE,
    FakeModel,
    make_workload,
    next_token,
    reference_output,
)
from warpserve.config import CacheConfig, SchedulerConfig
from warpserve.scheduler.output import SchedulerOutput
from warpserve.scheduler.scheduler import Scheduler

NUM_LOOKAHEAD = 3


class VerifyingFakeModel(FakeModel):
    """Writes every fed token (drafts too) into its slot; verifies drafts greedily
    against next_token over the context it reads back through the block table."""

    def execute(self, output: SchedulerOutput) -> dict[str, list[int]]:
        sampled = {}
        for seq in output.sequences:
            start = seq.num_computed_tokens
            known = [*seq.prompt_token_ids, *seq.output_token_ids]
            num_fed_known = len(seq.token_ids) - len(seq.draft_token_ids)
            assert seq.token_ids[:num_fed_known] == known[start : start + num_fed_known]
            for position, token_id in enumerate(seq.token_ids, start):
                self.slots[seq.block_ids[position // BLOCK_SIZE]][position % BLOCK_SIZE] = token_id
            if seq.do_sample:
                end = start + len(seq.token_ids)
                context = [
                    self.slots[seq.block_ids[p // BLOCK_SIZE]][p % BLOCK_SIZE] for p in range(end)
                ]
                assert context == known + seq.draft_token_ids, f"{seq.request_id}: bad K/V"
                sampled[seq.request_id] = _verify(known, seq.draft_token_ids, seq.seed)
        return sampled


def _verify(known: list[int], draft_ids: list[int], seed: int | None) -> list[int]:
    accepted: list[int] = []
    for draft_id in draft_ids:
        target = next_token(known + accepted, seed)
        accepted.append(target)
        if draft_id != target:
            return accepted
    return [*accepted, next_token(known + accepted, seed)]


def propose(scheduler: Scheduler, rng: random.Random) -> dict[str, list[int]]:
    """Drafts that are right about half the time, of random lengths."""
    drafts = {}
    for candidate in scheduler.draft_candidates():
        # A drafting model writes K/V up to position num_tokens + k - 2: it must be held.
        num_slots = len(candidate.block_ids) * BLOCK_SIZE
        assert len(candidate.token_ids) + candidate.max_num_draft_tokens - 1 <= num_slots
        context = list(candidate.token_ids)
        draft_ids = []
        for _ in range(rng.randint(1, candidate.max_num_draft_tokens)):
            right = next_token(context + draft_ids, candidate.seed)
            draft_ids.append(right if rng.random() < 0.5 else rng.randrange(VOCAB_SIZE))
        drafts[candidate.request_id] = draft_ids
    return drafts


@pytest.mark.parametrize(
    ("enable_prefix_caching", "num_blocks", "max_num_batched_tokens"),
    [(True, 256, 64), (False, 256, 8), (True, 256, 8), (True, 14, 16), (False, 14, 64)],
)
def test_drafts_change_no_output_and_leak_no_block(
    enable_prefix_caching: bool, num_blocks: int, max_num_batched_tokens: int
) -> None:
    scheduler = Scheduler(
        SchedulerConfig(4, max_num_batched_tokens, True, max_waiting=64),
        CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=enable_prefix_caching),
        num_blocks,
        MAX_MODEL_LEN,
        num_lookahead_tokens=NUM_LOOKAHEAD,
    )
    requests = make_workload()
    expected = {r.request_id: reference_output(r) for r in requests}
    model = VerifyingFakeModel(num_blocks)
    rng = random.Random(0)
    pending, finished, num_drafts = list(requests), [], 0
    for _ in range(1000):
        scheduler.add_requests(pending[:3])
        pending = pending[3:]
        if not pending and not scheduler.has_unfinished_requests():
            break
        output = scheduler.schedule()
        assert output.num_batched_tokens <= max_num_batched_tokens
        num_drafts += sum(len(s.draft_token_ids) for s in output.sequences)
        finished += scheduler.update_from_output(output, model.execute(output))
        model.poison_free_blocks(scheduler.kv_cache.block_pool)
        scheduler.set_draft_token_ids(propose(scheduler, rng))
    assert {r.request_id: (r.output_token_ids, r.finish_reason) for r in finished} == expected
    stats = scheduler.stats()
    assert stats.num_free_blocks == stats.num_total_blocks
    assert num_drafts > 50
    if num_blocks == 14:
        assert stats.num_preemptions > 0


def test_drafts_are_capped_by_max_tokens_and_lookahead() -> None:
    scheduler = Scheduler(
        SchedulerConfig(4, 64), CacheConfig(block_size=BLOCK_SIZE), 64, MAX_MODEL_LEN, 3
    )
    requests = make_workload()[:4]
    scheduler.add_requests(requests)
    output = scheduler.schedule()
    scheduler.update_from_output(output, VerifyingFakeModel(64).execute(output))
    for candidate in scheduler.draft_candidates():
        request = scheduler.get_request(candidate.request_id)
        assert request is not None
        left = request.max_tokens - request.num_output_tokens
        assert candidate.max_num_draft_tokens == min(3, left - 1)
    with pytest.raises(AssertionError, match="too many drafts"):
        rid = scheduler.draft_candidates()[0].request_id
        scheduler.set_draft_token_ids({rid: [1] * 4})
