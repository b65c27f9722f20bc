"""The paged KV cache's bookkeeping: block pool, prefix cache, per-request block tables.

Pure Python (no torch); the model runner owns the K/V tensors themselves.
"""

from warpserve.kv_cache.manager import KVCacheManager
from warpserve.kv_cache.sizing import num_blocks_for_budget

__all__ = ["KVCacheManager", "num_blocks_for_budget"]
