"""`CachedEncoder`: LRU order, caps, and results that callers cannot corrupt."""

from __future__ import annotations

import pytest

from warpserve.tokenization.cache import CachedEncoder
from warpserve.tokenization.tokenizer import Tokenizer


class CountingTokenizer(Tokenizer):
    def __init__(self, hf) -> None:
        super().__init__(hf)
        self.calls: list[str] = []

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.calls.append(text)
        return super().encode(text, add_special_tokens)


@pytest.fixture
def counting(hf_tokenizer) -> CountingTokenizer:
    return CountingTokenizer(hf_tokenizer)


def test_hits_do_not_encode_again(counting) -> None:
    cache = CachedEncoder(counting, max_entries=4)
    assert cache.encode("hello world") == [4, 5]
    assert cache.encode("hello world") == [4, 5]
    assert counting.calls == ["hello world"]
    stats = cache.stats()
    assert (stats.num_entries, stats.num_hits, stats.num_misses) == (1, 1, 1)
    assert stats.hit_rate == 0.5


def test_least_recently_used_is_evicted(counting) -> None:
    cache = CachedEncoder(counting, max_entries=2)
    cache.encode("hello")
    cache.encode("world")
    cache.encode("hello")  # "world" is now the least recently used
    cache.encode("hi")  # evicts "world"
    counting.calls.clear()
    cache.encode("hello")
    cache.encode("hi")
    cache.encode("world")
    assert counting.calls == ["world"]
    assert cache.stats().num_entries == 2


def test_add_special_tokens_is_part_of_the_key(counting) -> None:
    cache = CachedEncoder(counting)
    cache.encode("hi", add_special_tokens=True)
    cache.encode("hi", add_special_tokens=False)
    assert len(counting.calls) == 2


def test_returned_lists_are_copies(counting) -> None:
    cache = CachedEncoder(counting)
    cache.encode("hello world").append(99)
    assert cache.encode("hello world") == [4, 5]


def test_long_texts_and_zero_capacity_are_not_cached(counting) -> None:
    cache = CachedEncoder(counting, max_text_chars=5)
    cache.encode("hello world")
    cache.encode("hello world")
    assert len(counting.calls) == 2 and cache.stats().num_entries == 0
    off = CachedEncoder(counting, max_entries=0)
    off.encode("hi")
    assert off.stats().num_entries == 0


def test_bad_sizes_are_refused(counting) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        CachedEncoder(counting, max_entries=-1)
