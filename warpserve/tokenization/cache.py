"""A capped LRU cache of encode() results, for workloads that tokenize the same texts again
(embedding servers see repeated queries; chat clients resend the same system prompt).

Thread-safe: tokenizer worker threads may share one cache. Values are stored as tuples so a
caller cannot change a cached result; `encode` hands out a fresh list each time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from warpserve.tokenization.tokenizer import Tokenizer


@dataclass(frozen=True)
class EncodeCacheStats:
    num_entries: int
    num_hits: int
    num_misses: int

    @property
    def hit_rate(self) -> float:
        total = self.num_hits + self.num_misses
        return self.num_hits / total if total else 0.0


class CachedEncoder:
    """`tokenizer.encode` behind an LRU cache of at most `max_entries` texts.

    Texts longer than `max_text_chars` are encoded but not cached: long documents rarely
    repeat, and each would pin its text and ids in memory.
    """

    def __init__(self, tokenizer: Tokenizer, max_entries: int = 4096, max_text_chars: int = 8192):
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0 (0 disables caching)")
        if max_text_chars < 0:
            raise ValueError("max_text_chars must be >= 0")
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self.max_text_chars = max_text_chars
        self._entries: OrderedDict[tuple[str, bool], tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._num_hits = 0
        self._num_misses = 0

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        key = (text, add_special_tokens)
        with self._lock:
            ids = self._entries.get(key)
            if ids is not None:
                self._entries.move_to_end(key)
                self._num_hits += 1
                return list(ids)
            self._num_misses += 1
        # encode outside the lock: other threads keep hitting the cache meanwhile
        encoded = self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        if len(text) <= self.max_text_chars and self.max_entries > 0:
            self._put(key, tuple(encoded))
        return encoded

    def _put(self, key: tuple[str, bool], ids: tuple[int, ...]) -> None:
        with self._lock:
            self._entries[key] = ids
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def stats(self) -> EncodeCacheStats:
        with self._lock:
            return EncodeCacheStats(len(self._entries), self._num_hits, self._num_misses)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
