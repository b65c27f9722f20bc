"""Chained block hashes and longest-prefix lookups."""

import time

from warpserve.kv_cache.prefix_cache import (
    PrefixCache,
    extend_block_hashes,
    hash_block_tokens,
    new_hash_salt,
)

SALT = new_hash_salt()


def block_hashes_of(token_ids: list[int], block_size: int = 4, salt: bytes = SALT) -> list:
    block_hashes: list = []
    extend_block_hashes(block_hashes, token_ids, block_size, salt)
    return block_hashes


def test_same_block_content_at_different_prefixes_hashes_differently() -> None:
    first = block_hashes_of([1, 2, 3, 4, 5, 6, 7, 8])
    second = block_hashes_of([9, 9, 9, 9, 5, 6, 7, 8])
    assert first[1] != second[1]
    assert block_hashes_of([1, 2, 3, 4, 0, 0, 0, 0])[0] == first[0]


def test_only_full_blocks_are_hashed_and_extension_is_incremental() -> None:
    token_ids = list(range(11))
    block_hashes = block_hashes_of(token_ids[:5])
    assert len(block_hashes) == 1
    extend_block_hashes(block_hashes, token_ids, 4, SALT)
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
    block_hash = hash_block_tokens(SALT, [1])
    assert cache.insert(block_hash, 1)
    assert not cache.insert(block_hash, 2)
    assert cache.get(block_hash) == 1
    cache.remove(block_hash, 1)
    assert block_hash not in cache


def test_a_python_hash_collision_does_not_alias_blocks() -> None:
    # hash(0) == hash(2**61 - 1) and hash(-1) == hash(-2) in CPython, so these prefixes
    # had equal 64-bit chained values under hash((parent, tokens)): the second block of
    # one would have been served the K/V of the other's.
    assert hash((None, (0, 5, 6, 7))) == hash((None, (2**61 - 1, 5, 6, 7)))
    cache = PrefixCache()
    victim = block_hashes_of([0, 5, 6, 7, 1, 2, 3, 4])
    attacker = block_hashes_of([2**61 - 1, 5, 6, 7, 1, 2, 3, 4])
    for block_id, block_hash in enumerate(victim):
        cache.insert(block_hash, block_id)
    assert attacker[0] != victim[0] and attacker[1] != victim[1]
    assert cache.get(attacker[1]) is None
    assert cache.lookup(attacker) == []
    assert hash_block_tokens(SALT, [-1]) != hash_block_tokens(SALT, [-2])


def test_digests_depend_on_the_salt_and_are_sha256_sized() -> None:
    tokens = list(range(8))
    first, other = block_hashes_of(tokens), block_hashes_of(tokens, salt=new_hash_salt())
    assert all(len(h) == 32 for h in first)
    assert first != other
    assert first == block_hashes_of(tokens)  # deterministic for one salt


def test_hashing_stays_cheap() -> None:
    # One decode step hashes at most one block per sequence; a 32k-token prompt 2048 blocks.
    token_ids = list(range(32768))
    start = time.perf_counter()
    block_hashes_of(token_ids, block_size=16)
    assert time.perf_counter() - start < 0.5
