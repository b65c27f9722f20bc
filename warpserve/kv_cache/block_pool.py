"""The pool of KV blocks: ids, reference counts and the free queue. Pure Python.

Block `i` is rows `i * block_size ... (i + 1) * block_size - 1` of every layer's K and V
tensors in the model runner; this module only does the bookkeeping.

The free queue is in least-recently-freed order: allocation takes from the head, a block
whose last reference is dropped goes to the tail. A cached block (one with a hash in the
prefix cache) stays cached while it waits in the queue, so a later request with the same
prefix can take it back; it loses its hash only when the head reaches it and it is handed
out again. That makes the prefix cache an LRU that costs no memory beyond the pool.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from warpserve.kv_cache.prefix_cache import BlockHash, PrefixCache


class BlockPool:
    def __init__(self, num_blocks: int, prefix_cache: PrefixCache) -> None:
        if num_blocks < 1:
            raise ValueError("num_blocks must be >= 1; give the KV cache more memory")
        self.num_total_blocks = num_blocks
        self.prefix_cache = prefix_cache
        self._ref_counts = [0] * num_blocks
        self._block_hashes: list[BlockHash | None] = [None] * num_blocks
        # An ordered set: O(1) pop from the head, append at the tail and removal from the
        # middle (when a cache hit takes a block back).
        self._free_block_ids: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))

    @property
    def num_free_blocks(self) -> int:
        """Blocks no request holds, cached ones included (they can be evicted)."""
        return len(self._free_block_ids)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_total_blocks

    def free_block_ids(self) -> list[int]:
        """The free queue, head (next to be allocated) first."""
        return list(self._free_block_ids)

    def ref_count(self, block_id: int) -> int:
        return self._ref_counts[block_id]

    def block_hash(self, block_id: int) -> BlockHash | None:
        return self._block_hashes[block_id]

    def allocate(self, num_blocks: int) -> list[int]:
        """Take num_blocks from the head of the free queue, evicting their cache entries."""
        if num_blocks > self.num_free_blocks:
            raise RuntimeError(f"{num_blocks} blocks asked, {self.num_free_blocks} free")
        block_ids = []
        for _ in range(num_blocks):
            block_id, _ = self._free_block_ids.popitem(last=False)
            self._evict(block_id)
            self._ref_counts[block_id] = 1
            block_ids.append(block_id)
        return block_ids

    def touch(self, block_ids: Iterable[int]) -> None:
        """Add a reference to cached blocks found by a prefix lookup."""
        for block_id in block_ids:
            if self._ref_counts[block_id] == 0:
                del self._free_block_ids[block_id]
            self._ref_counts[block_id] += 1

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one reference from each block; the unreferenced join the queue in order."""
        for block_id in block_ids:
            assert self._ref_counts[block_id] > 0, f"block {block_id} freed twice"
            self._ref_counts[block_id] -= 1
            if self._ref_counts[block_id] == 0:
                self._free_block_ids[block_id] = None

    def cache(self, block_id: int, block_hash: BlockHash) -> None:
        """Record that block_id holds the K/V of block_hash's tokens (now computed)."""
        assert self._ref_counts[block_id] > 0, "only a held block can be cached"
        if self._block_hashes[block_id] is not None:
            return
        if self.prefix_cache.insert(block_hash, block_id):
            self._block_hashes[block_id] = block_hash

    def _evict(self, block_id: int) -> None:
        block_hash = self._block_hashes[block_id]
        if block_hash is not None:
            self.prefix_cache.remove(block_hash, block_id)
            self._block_hashes[block_id] = None
