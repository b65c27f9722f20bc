"""End to end with a scripted fake model: outputs must not depend on how work is scheduled.

The fake model writes every fed token into its KV slot (block table -> block, offset) and
samples from the context it reads back through the block table, so a wrong block table,
a bad prefix-cache hit or an overwritten shared block changes the outputs (and trips the
assertion that the cache holds exactly the known tokens).
"""

import random

import pytest

from warpserve.config import CacheConfig, SchedulerConfig
from warpserve.kv_cache.block_pool import BlockPool
from warpserve.request import FinishReason, Request, SamplingParams
from warpserve.scheduler.output import SchedulerOutput
from warpserve.scheduler.scheduler import Scheduler

BLOCK_SIZE = 4
VOCAB_SIZE = 24
EOS = 0
MAX_MODEL_LEN = 40


def next_token(context: list[int], seed: int | None) -> int:
    return hash((tuple(context), seed)) % VOCAB_SIZE


class FakeModel:
    def __init__(self, num_blocks: int) -> None:
        self.slots: list[list[int | None]] = [[None] * BLOCK_SIZE for _ in range(num_blocks)]

    def execute(self, output: SchedulerOutput) -> dict[str, list[int]]:
        sampled = {}
        for sequence in output.sequences:
            start = sequence.num_computed_tokens
            known = [*sequence.prompt_token_ids, *sequence.output_token_ids]
            assert sequence.token_ids == known[start : start + len(sequence.token_ids)]
            for position, token_id in enumerate(sequence.token_ids, start):
                block_id = sequence.block_ids[position // BLOCK_SIZE]
                self.slots[block_id][position % BLOCK_SIZE] = token_id
            if sequence.do_sample:
                end = start + len(sequence.token_ids)
                context = [
                    self.slots[sequence.block_ids[p // BLOCK_SIZE]][p % BLOCK_SIZE]
                    for p in range(end)
                ]
                assert context == known, f"{sequence.request_id}: KV cache != known tokens"
                sampled[sequence.request_id] = [next_token(known, sequence.seed)]
        return sampled

    def poison_free_blocks(self, block_pool: BlockPool) -> None:
        """Forget what free, uncached blocks held: nobody may read them before writing."""
        for block_id in block_pool.free_block_ids():
            if block_pool.block_hash(block_id) is None:
                self.slots[block_id] = [None] * BLOCK_SIZE


def reference_output(request: Request) -> tuple[list[int], FinishReason]:
    """What any schedule must produce: generate token by token, stop like the scheduler."""
    params = request.sampling_params
    max_tokens = min(params.max_tokens, MAX_MODEL_LEN - request.num_prompt_tokens)
    output: list[int] = []
    while True:
        token_id = next_token([*request.prompt_token_ids, *output], request.seed)
        output.append(token_id)
        if token_id in params.stop_token_ids or (not params.ignore_eos and token_id == EOS):
            return output, FinishReason.STOP
        if len(output) == max_tokens:
            return output, FinishReason.LENGTH


def make_workload() -> list[Request]:
    rng = random.Random(0)
    system_prompts = [[rng.randrange(1, VOCAB_SIZE) for _ in range(9)] for _ in range(2)]
    requests = []
    for index in range(12):
        prefix = system_prompts[index % 3] if index % 3 < 2 else []
        suffix = [rng.randrange(1, VOCAB_SIZE) for _ in range(rng.randrange(1, 12))]
        params = SamplingParams(
            max_tokens=rng.randrange(1, 16),
            ignore_eos=index % 4 == 0,
            stop_token_ids=[5] if index % 5 == 0 else [],
        )
        requests.append(Request(f"r{index}", [*prefix, *suffix], params, {EOS}, seed=index))
    # Children of one prompt (n=2), as the engine makes them; 12 tokens fill 3 blocks.
    for group, num_prompt_tokens in enumerate((14, 12)):
        shared = [rng.randrange(1, VOCAB_SIZE) for _ in range(num_prompt_tokens)]
        for index in range(2):
            params = SamplingParams(max_tokens=12, ignore_eos=True)
            request_id = f"n{group}-{index}"
            requests.append(Request(request_id, shared, params, {EOS}, seed=100 + index))
    return requests


def run(scheduler: Scheduler, requests: list[Request]) -> dict[str, tuple]:
    model = FakeModel(scheduler.kv_cache.num_total_blocks)
    config = scheduler.config
    pending = list(requests)
    finished: list[Request] = []
    for _ in range(1000):
        # Requests arrive while others run: three per step.
        scheduler.add_requests(pending[:3])
        pending = pending[3:]
        if not pending and not scheduler.has_unfinished_requests():
            break
        output = scheduler.schedule()
        assert output.num_batched_tokens <= config.max_num_batched_tokens
        assert len(output.sequences) <= config.max_num_seqs
        finished += scheduler.update_from_output(output, model.execute(output))
        model.poison_free_blocks(scheduler.kv_cache.block_pool)
    stats = scheduler.stats()
    assert stats.num_free_blocks == stats.num_total_blocks
    assert len(finished) == len(requests)
    return {r.request_id: (r.output_token_ids, r.finish_reason) for r in finished}


@pytest.mark.parametrize(
    ("enable_prefix_caching", "enable_chunked_prefill", "num_blocks", "max_num_batched_tokens"),
    [
        (False, False, 256, 64),
        (True, False, 256, 64),
        (False, True, 256, 8),
        (True, True, 256, 8),
        (False, True, 12, 16),
        (True, True, 12, 16),
        (True, False, 12, 64),
    ],
)
def test_outputs_do_not_depend_on_the_schedule(
    enable_prefix_caching: bool,
    enable_chunked_prefill: bool,
    num_blocks: int,
    max_num_batched_tokens: int,
) -> None:
    scheduler = Scheduler(
        SchedulerConfig(4, max_num_batched_tokens, enable_chunked_prefill, max_waiting=64),
        CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=enable_prefix_caching),
        num_blocks,
        MAX_MODEL_LEN,
    )
    requests = make_workload()
    expected = {r.request_id: reference_output(r) for r in requests}
    assert run(scheduler, requests) == expected
    stats = scheduler.stats()
    if num_blocks == 12:
        assert stats.num_preemptions > 0  # the tiny pool did force recomputation
    if enable_prefix_caching:
        assert stats.prefix_cache_hits > 0
    else:
        assert stats.prefix_cache_queries == 0
