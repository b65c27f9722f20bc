"""Tokenization for encoders: one truncation rule for every route, and an LRU cache.

The rule: an input longer than the model's limit is cut to the limit when `truncate` is
true, and refused with `InputTooLongError` (a ValueError naming both lengths and the
input's position) when it is false.

The cache is keyed by a digest of the text, never the text itself (a key holding a 4 MB
text would pin it), and capped in bytes rather than entries.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from warpserve.engine.protocol import InputTooLongError

TextInput = str | tuple[str, str]  # a text, or a (query, document) pair for cross-encoders


@dataclass(frozen=True)
class EncodedText:
    ids: tuple[int, ...]
    type_ids: tuple[int, ...]

    @property
    def num_tokens(self) -> int:
        return len(self.ids)


class EncoderTokenizer:
    """Thread-safe: the Rust tokenizer releases the GIL and the cache holds a lock."""

    def __init__(
        self, model_dir: Path, max_input_tokens: int, cache_bytes: int = 32 * 2**20
    ) -> None:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(model_dir)
        self.max_input_tokens = max_input_tokens
        self.pad_id = int(hf.pad_token_id) if hf.pad_token_id is not None else 0
        self._plain = _without_length_rules(hf.backend_tokenizer.to_str())
        self._truncating = _without_length_rules(hf.backend_tokenizer.to_str())
        self._truncating.enable_truncation(max_input_tokens)
        self._cache = _LruCache(cache_bytes)

    def encode(self, text: TextInput, truncate: bool = True) -> EncodedText:
        return self.encode_many([text], truncate)[0]

    def encode_many(self, texts: list[TextInput], truncate: bool = True) -> list[EncodedText]:
        """Cached texts from the cache, the others in one Rust batch call (no per-text
        Python round trip: measured 1.6x faster than encoding one by one)."""
        keys = [cache_key(text, truncate) for text in texts]
        found = [self._cache.get(key) for key in keys]
        missing = [i for i, e in enumerate(found) if e is None]
        if missing:
            batch = [_as_input(texts[i]) for i in missing]
            for index, encoding in zip(missing, self._plain.encode_batch_fast(batch), strict=True):
                encoded = self._within_limit(texts[index], index, encoding, truncate)
                found[index] = encoded
                self._cache.put(keys[index], encoded)
        return cast(list[EncodedText], found)  # every None was filled above

    @property
    def cache_bytes(self) -> int:
        """What the cache holds now, by the estimate it caps."""
        return self._cache.num_bytes

    def _within_limit(
        self,
        text: TextInput,
        index: int,
        encoding,
        truncate: bool,  # noqa: ANN001
    ) -> EncodedText:
        num_tokens = len(encoding.ids)
        if num_tokens > self.max_input_tokens:
            if not truncate:
                raise InputTooLongError(num_tokens, self.max_input_tokens, index)
            encoding = self._truncating.encode_batch_fast([_as_input(text)])[0]
        return EncodedText(tuple(encoding.ids), tuple(encoding.type_ids))


def cache_key(text: TextInput, truncate: bool) -> bytes:
    """A 256-bit digest of the input: texts are length-prefixed, so no pair of texts can
    read as another pair or a single text."""
    digest = hashlib.blake2b(b"T" if truncate else b"F", digest_size=32)
    for part in (text,) if isinstance(text, str) else text:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.digest()


def _entry_bytes(encoded: EncodedText) -> int:
    """An estimate of one entry's memory: two tuples (8-byte slots), a 28-byte int object
    per token id (type ids are the interned 0 and 1), the key and the map's bookkeeping."""
    return 44 * encoded.num_tokens + 400


def _as_input(text: TextInput):  # noqa: ANN202 - what tokenizers.encode_batch takes
    return list(text) if isinstance(text, tuple) else text


class _LruCache:
    """Digest -> encoding, capped in (estimated) bytes, least recently used out first;
    a cap of 0 keeps nothing."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._items: OrderedDict[bytes, EncodedText] = OrderedDict()
        self._lock = threading.Lock()
        self.num_bytes = 0

    def get(self, key: bytes) -> EncodedText | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: bytes, value: EncodedText) -> None:
        size = _entry_bytes(value)
        if size > self._max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.num_bytes -= _entry_bytes(old)
            self._items[key] = value
            self.num_bytes += size
            while self.num_bytes > self._max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.num_bytes -= _entry_bytes(evicted)


def _without_length_rules(serialized: str):  # noqa: ANN202 - a tokenizers.Tokenizer
    """A private copy with no padding or truncation: the caller decides both."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(serialized)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def collate(
    encoded: list[EncodedText], pad_id: int, input_names: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Right-padded int64 arrays [B, S] for the names the model takes."""
    num_rows, longest = len(encoded), max(e.num_tokens for e in encoded)
    input_ids = np.full((num_rows, longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((num_rows, longest), dtype=np.int64)
    token_type_ids = np.zeros((num_rows, longest), dtype=np.int64)
    for row, item in enumerate(encoded):
        input_ids[row, : item.num_tokens] = item.ids
        attention_mask[row, : item.num_tokens] = 1
        token_type_ids[row, : item.num_tokens] = item.type_ids
    arrays = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": token_type_ids,
    }
    return {name: arrays[name] for name in input_names}
