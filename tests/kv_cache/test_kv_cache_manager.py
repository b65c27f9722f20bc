"""KV cache manager: block tables, prefix sharing, caching after compute, sizing."""

import pytest

from warpserve.kv_cache import KVCacheManager, num_blocks_for_budget
from warpserve.request import Request, SamplingParams

BLOCK_SIZE = 4


def make_request(request_id: str, token_ids: list[int]) -> Request:
    return Request(request_id, token_ids, SamplingParams(max_tokens=4))


def run_prefill(manager: KVCacheManager, request: Request) -> list[int]:
    """Admit a request, compute its whole prompt, cache its full blocks."""
    block_ids, num_cached_tokens = manager.get_computed_blocks(request)
    num_new_tokens = request.num_tokens - num_cached_tokens
    assert manager.allocate_slots(request, num_new_tokens, block_ids)
    request.num_computed_tokens = request.num_tokens
    manager.cache_computed_blocks(request)
    return manager.get_block_ids(request.request_id)


def test_scripted_allocate_share_free_gives_exact_block_ids() -> None:
    manager = KVCacheManager(8, BLOCK_SIZE, enable_prefix_caching=True)
    first = make_request("a", list(range(10)))
    assert run_prefill(manager, first) == [0, 1, 2]
    second = make_request("b", [*range(8), 50, 51, 52])
    assert manager.get_computed_blocks(second) == ([0, 1], 8)
    assert run_prefill(manager, second) == [0, 1, 3]
    assert [manager.block_pool.ref_count(b) for b in range(4)] == [2, 2, 1, 1]
    manager.free(first)
    # Last block first: the unshared tail is evicted before the shared head.
    assert manager.block_pool.free_block_ids() == [4, 5, 6, 7, 2]
    manager.free(second)
    assert manager.block_pool.free_block_ids() == [4, 5, 6, 7, 2, 3, 1, 0]
    assert manager.num_free_blocks == manager.num_total_blocks
    assert manager.usage == 0.0


def test_two_requests_with_a_shared_three_block_prefix_share_three_blocks() -> None:
    manager = KVCacheManager(16, BLOCK_SIZE, enable_prefix_caching=True)
    prefix = list(range(100, 112))
    first_blocks = run_prefill(manager, make_request("a", [*prefix, 1, 2]))
    second_blocks = run_prefill(manager, make_request("b", [*prefix, 3]))
    assert first_blocks[:3] == second_blocks[:3]
    assert first_blocks[3] != second_blocks[3]
    assert [manager.block_pool.ref_count(b) for b in first_blocks[:3]] == [2, 2, 2]
    assert manager.num_free_blocks == 16 - 5
    assert manager.prefix_cache_queries == 14 + 13
    assert manager.prefix_cache_hits == 12


def test_a_lookup_always_leaves_the_last_token_to_compute() -> None:
    manager = KVCacheManager(8, BLOCK_SIZE, enable_prefix_caching=True)
    run_prefill(manager, make_request("a", list(range(8))))
    assert manager.get_computed_blocks(make_request("b", list(range(8)))) == ([0], 4)
    assert manager.get_computed_blocks(make_request("c", list(range(9)))) == ([0, 1], 8)


def test_blocks_are_cached_only_once_computed() -> None:
    manager = KVCacheManager(8, BLOCK_SIZE, enable_prefix_caching=True)
    request = make_request("a", list(range(10)))
    assert manager.allocate_slots(request, 6)
    other = make_request("b", list(range(10)))
    assert manager.get_computed_blocks(other) == ([], 0)
    assert manager.is_prefix_pending(other, 0)
    request.num_computed_tokens = 6
    manager.cache_computed_blocks(request)
    assert manager.get_computed_blocks(other) == ([0], 4)
    # Block 1 is neither computed nor scheduled: nothing to wait for.
    assert not manager.is_prefix_pending(other, 4)


def test_allocate_slots_fails_without_side_effects_and_counts_free_cache_hits() -> None:
    manager = KVCacheManager(4, BLOCK_SIZE, enable_prefix_caching=True)
    first = make_request("a", list(range(9)))
    run_prefill(manager, first)
    manager.free(first)  # blocks 0 and 1 stay cached in the free queue
    too_big = make_request("b", [*range(8), *range(20, 29)])  # 2 hits + 3 new blocks
    block_ids, num_cached_tokens = manager.get_computed_blocks(too_big)
    assert (block_ids, num_cached_tokens) == ([0, 1], 8)
    assert not manager.allocate_slots(too_big, too_big.num_tokens - 8, block_ids)
    assert manager.get_block_ids("b") == []
    assert manager.num_free_blocks == 4
    fits = make_request("c", [*range(8), *range(20, 28)])  # 2 hits + 2 new blocks
    block_ids, _ = manager.get_computed_blocks(fits)
    assert manager.allocate_slots(fits, fits.num_tokens - 8, block_ids)
    assert manager.get_block_ids("c") == [0, 1, 3, 2]
    assert manager.num_free_blocks == 0


def test_decode_steps_grow_the_table_one_block_at_a_time() -> None:
    manager = KVCacheManager(4, BLOCK_SIZE, enable_prefix_caching=False)
    request = make_request("a", list(range(3)))
    assert manager.allocate_slots(request, 3)
    request.num_computed_tokens = 3
    for step, token_id in enumerate([7, 8, 9]):
        request.append_output_token_ids([token_id])
        assert manager.allocate_slots(request, 1)
        request.num_computed_tokens += 1
        assert len(manager.get_block_ids("a")) == (1 if step == 0 else 2)
    assert manager.allocate_slots(request, 1, num_lookahead_tokens=4)
    assert manager.get_block_ids("a") == [0, 1, 2]


def test_without_prefix_caching_nothing_is_shared() -> None:
    manager = KVCacheManager(8, BLOCK_SIZE, enable_prefix_caching=False)
    run_prefill(manager, make_request("a", list(range(9))))
    other = make_request("b", list(range(9)))
    assert manager.get_computed_blocks(other) == ([], 0)
    assert run_prefill(manager, other) == [3, 4, 5]
    assert manager.prefix_cache_queries == 0
    assert len(manager.prefix_cache) == 0


def test_num_blocks_for_budget() -> None:
    # 2 (K, V) * 2 layers * 16 tokens * 4 heads * 64 dims * 4 bytes = 64 KiB per block
    assert num_blocks_for_budget(1.0, 2, 4, 64, 4, 16) == 16384
    assert num_blocks_for_budget(0.5, 2, 4, 64, 2, 16) == 16384
    with pytest.raises(ValueError, match="raise memory_gib"):
        num_blocks_for_budget(1e-6, 2, 4, 64, 4, 16)
