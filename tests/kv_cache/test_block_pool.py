"""Block pool: exact block ids, reference counts and the LRU order of the free queue."""

import pytest

from warpserve.kv_cache.block_pool import BlockPool
from warpserve.kv_cache.prefix_cache import PrefixCache, hash_block_tokens, new_hash_salt

SALT = new_hash_salt()


def make_pool(num_blocks: int) -> BlockPool:
    return BlockPool(num_blocks, PrefixCache())


def test_allocate_takes_from_the_head_and_free_appends_to_the_tail() -> None:
    pool = make_pool(4)
    assert pool.allocate(2) == [0, 1]
    assert pool.allocate(1) == [2]
    pool.free([1, 0])
    assert pool.free_block_ids() == [3, 1, 0]
    assert pool.allocate(2) == [3, 1]
    assert pool.num_free_blocks == 1
    assert pool.usage == pytest.approx(0.75)


def test_touch_and_free_count_references() -> None:
    pool = make_pool(3)
    (block_id,) = pool.allocate(1)
    pool.touch([block_id])
    assert pool.ref_count(block_id) == 2
    pool.free([block_id])
    assert pool.ref_count(block_id) == 1
    assert block_id not in pool.free_block_ids()
    pool.free([block_id])
    assert pool.free_block_ids() == [1, 2, 0]


def test_allocating_more_than_free_raises() -> None:
    pool = make_pool(2)
    pool.allocate(2)
    with pytest.raises(RuntimeError):
        pool.allocate(1)


def test_cached_blocks_are_evicted_least_recently_freed_first() -> None:
    pool = make_pool(4)
    block_ids = pool.allocate(4)
    block_hashes = [hash_block_tokens(SALT, [block_id]) for block_id in block_ids]
    for block_id, block_hash in zip(block_ids, block_hashes, strict=True):
        pool.cache(block_id, block_hash)
    pool.free([2, 0, 3, 1])
    # Freed blocks keep their hashes until the queue hands them out again.
    assert len(pool.prefix_cache) == 4
    assert pool.allocate(1) == [2]
    assert block_hashes[2] not in pool.prefix_cache
    assert pool.block_hash(2) is None
    assert pool.allocate(2) == [0, 3]
    assert [pool.prefix_cache.get(h) for h in block_hashes] == [None, 1, None, None]


def test_a_cache_hit_takes_a_free_block_back_and_refreeing_moves_it_to_the_tail() -> None:
    pool = make_pool(3)
    block_ids = pool.allocate(3)
    block_hash = hash_block_tokens(SALT, [7])
    pool.cache(0, block_hash)
    pool.free(block_ids)
    assert pool.free_block_ids() == [0, 1, 2]
    pool.touch([0])
    assert pool.free_block_ids() == [1, 2]
    pool.free([0])
    assert pool.free_block_ids() == [1, 2, 0]
    assert pool.prefix_cache.get(block_hash) == 0


def test_a_second_block_with_the_same_hash_stays_private() -> None:
    pool = make_pool(2)
    block_hash = hash_block_tokens(SALT, [1, 2])
    pool.allocate(2)
    pool.cache(0, block_hash)
    pool.cache(1, block_hash)
    assert pool.prefix_cache.get(block_hash) == 0
    assert pool.block_hash(1) is None
    pool.free([0, 1])
    pool.allocate(2)  # evicting both must not touch the other's entry
    assert len(pool.prefix_cache) == 0


def test_an_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        make_pool(0)
