"""Scheduler: budgets, chunked prefill, preemption, admission checks, finishing."""

import pytest

from warpserve.config import CacheConfig, SchedulerConfig
from warpserve.request import FinishReason, Request, RequestStatus, SamplingParams
from warpserve.scheduler.output import SchedulerOutput
from warpserve.scheduler.scheduler import QueueFullError, Scheduler

EOS = 0


def make_scheduler(
    num_blocks: int = 64,
    block_size: int = 4,
    max_num_seqs: int = 8,
    max_num_batched_tokens: int = 64,
    enable_chunked_prefill: bool = True,
    enable_prefix_caching: bool = True,
    max_waiting: int = 16,
    max_model_len: int = 256,
) -> Scheduler:
    return Scheduler(
        SchedulerConfig(max_num_seqs, max_num_batched_tokens, enable_chunked_prefill, max_waiting),
        CacheConfig(block_size=block_size, enable_prefix_caching=enable_prefix_caching),
        num_blocks,
        max_model_len,
    )


def make_request(
    request_id: str,
    num_prompt_tokens: int,
    first_token_id: int = 100,
    seed: int | None = None,
    **params: object,
) -> Request:
    prompt_token_ids = list(range(first_token_id, first_token_id + num_prompt_tokens))
    params.setdefault("max_tokens", 8)
    sampling_params = SamplingParams(**params)  # type: ignore[arg-type]
    return Request(request_id, prompt_token_ids, sampling_params, frozenset({EOS}), seed)


def sample_all(scheduler: Scheduler, output: SchedulerOutput, token_id: int = 1) -> list[Request]:
    sampled = {s.request_id: [token_id] for s in output.sequences if s.do_sample}
    return scheduler.update_from_output(output, sampled)


def token_counts(output: SchedulerOutput) -> dict[str, int]:
    return {s.request_id: len(s.token_ids) for s in output.sequences}


def test_max_num_batched_tokens_is_respected_exactly() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=16)
    for index in range(3):
        scheduler.add_request(make_request(f"r{index}", 10, first_token_id=100 * index))
    output = scheduler.schedule()
    assert token_counts(output) == {"r0": 10, "r1": 6}
    assert output.num_batched_tokens == 16
    sample_all(scheduler, output)
    # Running first: r0 decodes, r1 finishes its prompt, r2 gets what is left.
    assert token_counts(scheduler.schedule()) == {"r0": 1, "r1": 4, "r2": 10}


def test_max_num_seqs_is_respected_exactly() -> None:
    scheduler = make_scheduler(max_num_seqs=3)
    for index in range(5):
        scheduler.add_request(make_request(f"r{index}", 2, first_token_id=10 * index))
    output = scheduler.schedule()
    assert list(token_counts(output)) == ["r0", "r1", "r2"]
    assert (scheduler.num_running, scheduler.num_waiting) == (3, 2)
    sample_all(scheduler, output)
    assert list(token_counts(scheduler.schedule())) == ["r0", "r1", "r2"]


def test_chunked_prefill_splits_the_prompt_and_samples_on_the_last_chunk() -> None:
    scheduler = make_scheduler(max_num_seqs=4, max_num_batched_tokens=4)
    request = make_request("r", 10)
    scheduler.add_request(request)
    chunks = []
    for _ in range(3):
        output = scheduler.schedule()
        (sequence,) = output.sequences
        chunks.append((sequence.num_computed_tokens, sequence.token_ids, sequence.do_sample))
        assert len(sequence.block_ids) * 4 >= sequence.num_computed_tokens + len(sequence.token_ids)
        sample_all(scheduler, output, token_id=7)
    prompt = request.prompt_token_ids
    assert chunks == [(0, prompt[0:4], False), (4, prompt[4:8], False), (8, prompt[8:10], True)]
    assert request.output_token_ids == [7]
    (sequence,) = scheduler.schedule().sequences
    assert (sequence.num_computed_tokens, sequence.token_ids, sequence.do_sample) == (10, [7], True)
    assert sequence.output_token_ids is request.output_token_ids


def test_without_chunked_prefill_a_prompt_that_does_not_fit_waits_in_order() -> None:
    scheduler = make_scheduler(
        max_num_seqs=4, max_num_batched_tokens=8, enable_chunked_prefill=False
    )
    scheduler.add_request(make_request("r0", 5, first_token_id=0))
    scheduler.add_request(make_request("r1", 5, first_token_id=10))
    scheduler.add_request(make_request("r2", 2, first_token_id=20))
    output = scheduler.schedule()
    assert token_counts(output) == {"r0": 5}  # r2 would fit but may not overtake r1
    sample_all(scheduler, output)
    assert token_counts(scheduler.schedule()) == {"r0": 1, "r1": 5, "r2": 2}


def test_without_chunked_prefill_a_prompt_longer_than_the_budget_is_refused() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=8, enable_chunked_prefill=False)
    with pytest.raises(ValueError, match="max_num_batched_tokens"):
        scheduler.add_request(make_request("r", 9))


def test_preemption_is_newest_first_and_keeps_output_tokens() -> None:
    # 4 blocks of 4 tokens: two 4-token prompts each need a block per 4 decode steps.
    scheduler = make_scheduler(num_blocks=4, enable_prefix_caching=False)
    old = make_request("old", 4, first_token_id=0, max_tokens=12, ignore_eos=True)
    new = make_request("new", 4, first_token_id=10, max_tokens=12, ignore_eos=True)
    scheduler.add_request(old)
    scheduler.add_request(new)
    step = 0
    while scheduler.num_preemptions == 0:
        output = scheduler.schedule()
        step += 1
        sample_all(scheduler, output, token_id=step)
    # Both needed a third block at step 6; the newer one gave its blocks up.
    assert step == 6
    assert output.freed_request_ids == ["new"] and token_counts(output) == {"old": 1}
    assert new.status is RequestStatus.PREEMPTED and new.num_computed_tokens == 0
    assert list(scheduler.waiting) == [new]
    assert new.output_token_ids == list(range(1, 6))
    assert old.output_token_ids == list(range(1, 7))
    next_output = scheduler.schedule()
    assert next_output.freed_request_ids == []
    while new.status is not RequestStatus.RUNNING:
        step += 1
        sample_all(scheduler, next_output, token_id=step)
        next_output = scheduler.schedule()
    resumed = next(s for s in next_output.sequences if s.request_id == "new")
    assert resumed.num_computed_tokens == 0
    assert resumed.token_ids == [*new.prompt_token_ids, 1, 2, 3, 4, 5]
    assert resumed.do_sample


def test_a_running_request_preempts_itself_when_it_is_the_newest() -> None:
    scheduler = make_scheduler(num_blocks=2, block_size=4, enable_prefix_caching=False)
    scheduler.add_request(make_request("a", 4, first_token_id=0, max_tokens=4, ignore_eos=True))
    scheduler.add_request(make_request("b", 4, first_token_id=10, max_tokens=4, ignore_eos=True))
    sample_all(scheduler, scheduler.schedule())
    output = scheduler.schedule()  # both need a second block; only one exists
    assert token_counts(output) == {"a": 1}
    assert scheduler.num_preemptions == 1
    assert [r.request_id for r in scheduler.waiting] == ["b"]


def test_a_request_bigger_than_the_pool_is_refused() -> None:
    scheduler = make_scheduler(num_blocks=4, block_size=4)
    with pytest.raises(ValueError, match="KV blocks"):
        scheduler.add_request(make_request("big", 10, max_tokens=10))  # 19 slots, 5 blocks
    scheduler.add_request(make_request("fits", 10, max_tokens=7))  # 16 slots, 4 blocks
    assert scheduler.num_waiting == 1


def test_prompt_checks_and_max_tokens_cap() -> None:
    scheduler = make_scheduler(max_model_len=12)
    with pytest.raises(ValueError, match="prompt has 12 tokens, the context is 12"):
        scheduler.add_request(make_request("long", 12))
    with pytest.raises(ValueError, match="empty"):
        scheduler.add_request(Request("empty", [], SamplingParams()))
    request = make_request("capped", 10, max_tokens=100, ignore_eos=True)
    scheduler.add_request(request)
    assert request.max_tokens == 2
    finished = []
    while scheduler.has_unfinished_requests():
        finished += sample_all(scheduler, scheduler.schedule())
    assert finished == [request]
    assert request.finish_reason is FinishReason.LENGTH and request.num_tokens == 12


def test_queue_full_and_duplicate_ids() -> None:
    scheduler = make_scheduler(max_waiting=2)
    scheduler.add_request(make_request("a", 3))
    with pytest.raises(QueueFullError):
        scheduler.add_requests([make_request("b", 3), make_request("c", 3)])
    assert scheduler.num_waiting == 1  # all or none
    with pytest.raises(ValueError, match="unique"):
        scheduler.add_request(make_request("a", 3))
    scheduler.add_request(make_request("b", 3))
    with pytest.raises(QueueFullError):
        scheduler.add_request(make_request("c", 3))


def test_abort_and_finish_return_every_block() -> None:
    scheduler = make_scheduler(max_num_batched_tokens=12)
    for index in range(3):
        scheduler.add_request(make_request(f"r{index}", 8, first_token_id=10 * index))
    sample_all(scheduler, scheduler.schedule())  # r0 runs, r1 is mid-prefill, r2 waits
    assert scheduler.stats().num_free_blocks < scheduler.stats().num_total_blocks
    scheduler.finish_requests(["r1", "r2", "unknown"], FinishReason.ABORT)
    assert [r.request_id for r in scheduler.running] == ["r0"]
    assert scheduler.num_waiting == 0
    output = scheduler.schedule()
    assert output.freed_request_ids == ["r1"]  # r2 never ran
    scheduler.finish_requests("r0", FinishReason.STOP, stop_reason="###")
    assert scheduler.update_from_output(output, {"r0": [5]}) == []  # finished mid-step
    stats = scheduler.stats()
    assert stats.num_free_blocks == stats.num_total_blocks and stats.kv_cache_usage == 0.0
    assert not scheduler.has_unfinished_requests()


def test_stop_conditions() -> None:
    scheduler = make_scheduler()
    eos = make_request("eos", 3, first_token_id=10)
    ignore = make_request("ignore", 3, first_token_id=20, ignore_eos=True, max_tokens=2)
    stop_id = make_request("stop_id", 3, first_token_id=30, stop_token_ids=[9])
    early = make_request("early", 3, first_token_id=40, min_tokens=2)
    for request in (eos, ignore, stop_id, early):
        scheduler.add_request(request)
    output = scheduler.schedule()
    sampled = {"eos": [EOS], "ignore": [EOS], "stop_id": [9], "early": [EOS]}
    assert scheduler.update_from_output(output, sampled) == [eos, stop_id]
    assert (eos.finish_reason, eos.stop_reason) == (FinishReason.STOP, None)
    assert (stop_id.finish_reason, stop_id.stop_reason) == (FinishReason.STOP, 9)
    output = scheduler.schedule()
    assert scheduler.update_from_output(output, {"ignore": [EOS], "early": [EOS]}) == [
        ignore,
        early,
    ]
    assert ignore.finish_reason is FinishReason.LENGTH
    assert early.output_token_ids == [EOS, EOS] and early.finish_reason is FinishReason.STOP
    assert scheduler.stats().num_free_blocks == 64


def test_several_accepted_tokens_stop_at_the_first_stop_token() -> None:
    scheduler = make_scheduler()
    request = make_request("r", 3, max_tokens=10)
    scheduler.add_request(request)
    output = scheduler.schedule()
    assert scheduler.update_from_output(output, {"r": [5, 6, EOS, 8]}) == [request]
    assert request.output_token_ids == [5, 6, EOS]


def test_same_prompt_children_share_its_blocks_through_the_prefix_cache() -> None:
    scheduler = make_scheduler()
    children = [make_request(f"r-{index}", 13, seed=index) for index in range(2)]
    scheduler.add_requests(children)
    output = scheduler.schedule()
    # The second child waits one step for the first to compute the shared blocks.
    assert token_counts(output) == {"r-0": 13}
    sample_all(scheduler, output)
    output = scheduler.schedule()
    assert token_counts(output) == {"r-0": 1, "r-1": 1}
    first, second = (s.block_ids for s in output.sequences)
    assert first[:3] == second[:3] and first[3] != second[3]
    pool = scheduler.kv_cache.block_pool
    assert [pool.ref_count(block_id) for block_id in first[:3]] == [2, 2, 2]
    assert children[1].num_cached_tokens == 12
    assert output.sequences[1].seed == 1
    stats = scheduler.stats()
    assert (stats.prefix_cache_queries, stats.prefix_cache_hits) == (26, 12)
