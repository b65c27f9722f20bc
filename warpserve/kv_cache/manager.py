"""Per-request block tables over the block pool, with prefix caching. Pure Python.

The scheduler asks three things of it, in this order for a waiting request:
`get_computed_blocks` (the cached prefix), `allocate_slots` (room for this step's tokens,
or False), and after the step `cache_computed_blocks`; `free` when the request finishes
or is preempted.

A block enters the prefix cache only once its K/V have been computed (after the step,
not at allocation), so a hit never depends on the order in which the model runner
writes and reads the sequences of one step.
"""

from __future__ import annotations

from collections.abc import Sequence

from warpserve.kv_cache.block_pool import BlockPool
from warpserve.kv_cache.prefix_cache import (
    BlockHash,
    PrefixCache,
    extend_block_hashes,
    new_hash_salt,
)
from warpserve.request import Request


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool) -> None:
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.prefix_cache = PrefixCache()
        self._hash_salt = new_hash_salt()  # per cache: digests are not predictable
        self.block_pool = BlockPool(num_blocks, self.prefix_cache)
        self.prefix_cache_queries = 0  # tokens looked up when a request (re)starts
        self.prefix_cache_hits = 0  # of which found in the cache
        self._block_tables: dict[str, list[int]] = {}
        # Hashes of each request's full blocks of known tokens (computed or not), and how
        # many of its blocks have been offered to the prefix cache.
        self._block_hashes: dict[str, list[BlockHash]] = {}
        self._num_cached_blocks: dict[str, int] = {}
        # Full blocks being computed this step -> the request computing them: a waiting
        # request with that prefix is better off waiting one step for a cache hit.
        self._pending_hashes: dict[BlockHash, str] = {}

    @property
    def num_total_blocks(self) -> int:
        return self.block_pool.num_total_blocks

    @property
    def num_free_blocks(self) -> int:
        return self.block_pool.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests (cached but unreferenced blocks are free)."""
        return self.block_pool.usage

    def num_blocks_for_tokens(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def get_block_ids(self, request_id: str) -> list[int]:
        """The request's block table (live; copy it to keep it)."""
        return self._block_tables.get(request_id, [])

    def get_computed_blocks(self, request: Request) -> tuple[list[int], int]:
        """The longest cached prefix of a request's known tokens: (block ids, num tokens).

        Never the whole sequence: the last known token is left to compute, as a step must
        produce logits to sample from. The blocks are not held until allocate_slots.
        """
        if not self.enable_prefix_caching:
            return [], 0
        block_hashes = self._hashes_of(request)
        num_lookup_blocks = (request.num_tokens - 1) // self.block_size
        block_ids = self.prefix_cache.lookup(block_hashes[:num_lookup_blocks])
        return block_ids, len(block_ids) * self.block_size

    def is_prefix_pending(self, request: Request, num_computed_tokens: int) -> bool:
        """Is another request computing, this step, the block after the cached prefix?

        True for the n > 1 children of one prompt, or requests with the same system
        prompt, that arrive together: the first computes the shared blocks, the others
        find them in the cache a step later instead of computing copies.
        """
        if not self.enable_prefix_caching:
            return False
        block_index = num_computed_tokens // self.block_size
        num_lookup_blocks = (request.num_tokens - 1) // self.block_size
        block_hashes = self._hashes_of(request)
        return block_index < num_lookup_blocks and block_hashes[block_index] in self._pending_hashes

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        new_computed_block_ids: Sequence[int] = (),
        num_lookahead_tokens: int = 0,
    ) -> bool:
        """Grow the block table to hold this step's tokens; False (no change) if short.

        new_computed_block_ids: the cached prefix from get_computed_blocks, only when the
        request has no blocks yet. num_lookahead_tokens: extra slots past the new tokens
        (draft tokens of speculative decoding).
        """
        request_id = request.request_id
        block_table = self._block_tables.get(request_id, [])
        assert not (block_table and new_computed_block_ids), "cached prefix on a running request"
        num_computed_tokens = request.num_computed_tokens + len(new_computed_block_ids) * (
            self.block_size
        )
        num_tokens_after_step = num_computed_tokens + num_new_tokens
        num_required_blocks = self.num_blocks_for_tokens(
            num_tokens_after_step + num_lookahead_tokens
        )
        num_new_blocks = max(
            0, num_required_blocks - len(block_table) - len(new_computed_block_ids)
        )
        # Cache hits waiting in the free queue stop being free once taken.
        num_free_hits = sum(1 for b in new_computed_block_ids if self.block_pool.ref_count(b) == 0)
        if num_new_blocks > self.num_free_blocks - num_free_hits:
            return False
        if request_id not in self._block_tables:
            self._start(request, len(new_computed_block_ids))
        self.block_pool.touch(new_computed_block_ids)
        block_table.extend(new_computed_block_ids)
        block_table.extend(self.block_pool.allocate(num_new_blocks))
        self._block_tables[request_id] = block_table
        self._mark_pending(request, num_tokens_after_step)
        return True

    def cache_computed_blocks(self, request: Request) -> None:
        """Offer the blocks that request.num_computed_tokens has just filled to the cache."""
        if not self.enable_prefix_caching:
            return
        request_id = request.request_id
        block_table = self._block_tables[request_id]
        block_hashes = self._hashes_of(request)
        num_full_blocks = request.num_computed_tokens // self.block_size
        for block_index in range(self._num_cached_blocks[request_id], num_full_blocks):
            self.block_pool.cache(block_table[block_index], block_hashes[block_index])
            self._unmark_pending(block_hashes[block_index], request_id)
        self._num_cached_blocks[request_id] = max(
            num_full_blocks, self._num_cached_blocks[request_id]
        )

    def free(self, request: Request) -> None:
        """Return the request's blocks to the pool (cached ones stay cached until evicted).

        Safe for a request that holds no blocks. The table is freed last block first, so
        the free queue evicts a request's tail before its head, which more requests share.
        """
        request_id = request.request_id
        block_table = self._block_tables.pop(request_id, [])
        self.block_pool.free(reversed(block_table))
        block_hashes = self._block_hashes.pop(request_id, [])
        num_cached_blocks = self._num_cached_blocks.pop(request_id, 0)
        for block_hash in block_hashes[num_cached_blocks:]:
            self._unmark_pending(block_hash, request_id)

    def _start(self, request: Request, num_hit_blocks: int) -> None:
        self._num_cached_blocks[request.request_id] = num_hit_blocks
        if self.enable_prefix_caching:
            self.prefix_cache_queries += request.num_tokens
            self.prefix_cache_hits += num_hit_blocks * self.block_size

    def _hashes_of(self, request: Request) -> list[BlockHash]:
        block_hashes = self._block_hashes.setdefault(request.request_id, [])
        extend_block_hashes(block_hashes, request.all_token_ids, self.block_size, self._hash_salt)
        return block_hashes

    def _mark_pending(self, request: Request, num_tokens_after_step: int) -> None:
        if not self.enable_prefix_caching:
            return
        block_hashes = self._hashes_of(request)
        num_full_blocks = min(num_tokens_after_step // self.block_size, len(block_hashes))
        for block_hash in block_hashes[
            self._num_cached_blocks[request.request_id] : num_full_blocks
        ]:
            self._pending_hashes.setdefault(block_hash, request.request_id)

    def _unmark_pending(self, block_hash: BlockHash, request_id: str) -> None:
        if self._pending_hashes.get(block_hash) == request_id:
            del self._pending_hashes[block_hash]
