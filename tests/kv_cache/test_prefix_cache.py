"""Chained block hashes and longest-prefix lookups."""

from warpserve.kv_cache.prefix_cache import PrefixCache, extend_block_hashes, hash_block_tokens


def block_hashes_of(token_ids: list[int], block_size: int = 4) -> list:
    block_hashes: list = []
    extend_block_hashes(block_hashes, token_ids, block_size)
    return block_hashes


def test_same_block_content_at_different_prefixes_hashes_differently() -> None:
    first = block_hashes_of([1, 2, 3, 4, 5, 6, 7, 8])
    second = block_hashes_of([9, 9, 9, 9, 5, 6, 7, 8])
    assert first[1].token_ids == second[1].token_ids
    assert first[1] != second[1]
    assert block_hashes_of([1, 2, 3, 4, 0, 0, 0, 0])[0] == first[0]


def test_only_full_blocks_are_hashed_and_extension_is_incremental() -> None:
    token_ids = list(range(11))
    block_hashes = block_hashes_of(token_ids[:5])
    assert len(block_hashes) == 1
    extend_block_hashes(block_hashes, token_ids, 4)
    assert block_hashes == block_hashes_of(token_ids)
    assert len(block_hashes) == 2
    assert block_hashes[1] == hash_block_tokens(block_hashes[0], [4, 5, 6, 7])


def test_lookup_returns_the_longest_cached_prefix() -> None:
    cache = PrefixCache()
    block_hashes = block_hashes_of(list(range(16)))
    cache.insert(block_hashes[0], 5)
    cache.insert(block_hashes[1], 3)
    cache.insert(block_hashes[3], 9)  # unreachable: block 2 is missing
    assert cache.lookup(block_hashes) == [5, 3]
    assert cache.lookup(block_hashes_of([0, 1, 2, 99])) == []


def test_insert_keeps_the_first_block_for_a_hash() -> None:
    cache = PrefixCache()
    block_hash = hash_block_tokens(None, [1])
    assert cache.insert(block_hash, 1)
    assert not cache.insert(block_hash, 2)
    assert cache.get(block_hash) == 1
    cache.remove(block_hash, 1)
    assert block_hash not in cache
