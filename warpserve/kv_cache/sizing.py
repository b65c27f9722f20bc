"""How many KV blocks fit a memory budget. Pure Python: the model runner calls it with
the model's shape, then allocates the K/V tensors once."""

from __future__ import annotations

GIB = 1 << 30


def bytes_per_block(
    num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int, block_size: int
) -> int:
    """K and V of block_size tokens in every layer: 2 * L * block_size * H_kv * D * bytes."""
    return 2 * num_layers * block_size * num_kv_heads * head_dim * dtype_bytes


def num_blocks_for_budget(
    memory_gib: float,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    dtype_bytes: int,
    block_size: int,
) -> int:
    """The number of whole blocks whose K/V fit in memory_gib; at least one, or ValueError."""
    block_bytes = bytes_per_block(num_layers, num_kv_heads, head_dim, dtype_bytes, block_size)
    num_blocks = int(memory_gib * GIB) // block_bytes
    if num_blocks < 1:
        raise ValueError(
            f"memory_gib={memory_gib} holds no KV block of {block_bytes} bytes; "
            f"raise memory_gib to at least {block_bytes / GIB:.4f}"
        )
    return num_blocks
