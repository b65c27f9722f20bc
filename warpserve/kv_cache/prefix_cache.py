"""Prefix caching: chained hashes of full KV blocks, and the map from hash to block id.

A block's hash covers its own tokens and, through its parent's hash, every token before
it, so equal hashes mean equal prefixes: the K/V of a block depend on all earlier tokens,
not only on the block's own. Only full blocks are hashed; a partly filled block is still
being written.

The hash is SHA-256 over the parent's digest and the tokens' bytes, chained from a random
per-cache salt, not Python's `hash`: integers hash modulo 2**61 - 1 and tuples through a
public mixing function, so a client that sends chosen token ids could make two different
prefixes share a 64-bit value and read another request's K/V (vLLM's CVE-2025-25183).
The salt keeps digests from being predictable across processes.

Pure Python; the block pool is the only writer of the map (it evicts entries when it
reuses a block).
"""

from __future__ import annotations

import hashlib
import secrets
from array import array
from collections.abc import Sequence
from typing import NewType

# The SHA-256 digest of (parent digest, the block's token ids as int64); 32 bytes.
BlockHash = NewType("BlockHash", bytes)


def new_hash_salt() -> bytes:
    """The root every chain starts from: the parent digest of a first block."""
    return secrets.token_bytes(32)


def hash_block_tokens(parent: bytes, token_ids: Sequence[int]) -> BlockHash:
    """parent: the previous block's hash, or the salt for a first block."""
    return BlockHash(hashlib.sha256(parent + array("q", token_ids).tobytes()).digest())


def extend_block_hashes(
    block_hashes: list[BlockHash], token_ids: Sequence[int], block_size: int, salt: bytes
) -> None:
    """Append the hashes of the full blocks of token_ids not yet in block_hashes.

    Incremental because a sequence only grows: a decode step costs one block's hash.
    """
    num_full_blocks = len(token_ids) // block_size
    for block_index in range(len(block_hashes), num_full_blocks):
        parent = block_hashes[-1] if block_hashes else salt
        start = block_index * block_size
        block_hashes.append(hash_block_tokens(parent, token_ids[start : start + block_size]))


class PrefixCache:
    """Block hash -> id of the block holding those K/V. One block per hash."""

    def __init__(self) -> None:
        self._block_ids: dict[BlockHash, int] = {}

    def __len__(self) -> int:
        return len(self._block_ids)

    def __contains__(self, block_hash: BlockHash) -> bool:
        return block_hash in self._block_ids

    def get(self, block_hash: BlockHash) -> int | None:
        return self._block_ids.get(block_hash)

    def lookup(self, block_hashes: Sequence[BlockHash]) -> list[int]:
        """Block ids of the longest cached prefix of block_hashes."""
        block_ids: list[int] = []
        for block_hash in block_hashes:
            block_id = self._block_ids.get(block_hash)
            if block_id is None:
                break
            block_ids.append(block_id)
        return block_ids

    def insert(self, block_hash: BlockHash, block_id: int) -> bool:
        """Map block_hash to block_id; False (and no change) if another block has it.

        Two requests that computed the same prefix in the same step both hold a copy;
        the first to finish its block keeps the entry, the other's copy stays private.
        """
        if block_hash in self._block_ids:
            return False
        self._block_ids[block_hash] = block_id
        return True

    def remove(self, block_hash: BlockHash, block_id: int) -> None:
        assert self._block_ids.get(block_hash) == block_id, "evicting a block not cached"
        del self._block_ids[block_hash]
