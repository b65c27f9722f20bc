"""Tokenization for encoders: one truncation rule for every route, and an LRU cache.

The rule: an input longer than the model's limit is cut to the limit when `truncate` is
true, and refused with `InputTooLongError` (a ValueError naming both lengths and the
input's position) when it is false.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
    """Thread-safe: the Rust tokenizer releases the GIL and lru_cache holds a lock."""

    def __init__(self, model_dir: Path, max_input_tokens: int, cache_size: int = 4096) -> None:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(model_dir)
        self.max_input_tokens = max_input_tokens
        self.pad_id = int(hf.pad_token_id) if hf.pad_token_id is not None else 0
        self._plain = _without_length_rules(hf.backend_tokenizer.to_str())
        self._truncating = _without_length_rules(hf.backend_tokenizer.to_str())
        self._truncating.enable_truncation(max_input_tokens)
        self._cached = lru_cache(maxsize=cache_size)(self._encode_uncached)

    def encode(self, text: TextInput, truncate: bool = True) -> EncodedText:
        return self._cached(text, truncate)

    def encode_many(self, texts: list[TextInput], truncate: bool = True) -> list[EncodedText]:
        encoded = []
        for index, text in enumerate(texts):
            try:
                encoded.append(self._cached(text, truncate))
            except InputTooLongError as exc:
                raise InputTooLongError(exc.num_tokens, exc.max_input_tokens, index) from None
        return encoded

    def _encode_uncached(self, text: TextInput, truncate: bool) -> EncodedText:
        encoding = self._encode_with(self._plain, text)
        num_tokens = len(encoding.ids)
        if num_tokens > self.max_input_tokens:
            if not truncate:
                raise InputTooLongError(num_tokens, self.max_input_tokens)
            encoding = self._encode_with(self._truncating, text)
        return EncodedText(tuple(encoding.ids), tuple(encoding.type_ids))

    @staticmethod
    def _encode_with(tokenizer, text: TextInput):  # noqa: ANN205 - a tokenizers.Encoding
        if isinstance(text, tuple):
            return tokenizer.encode(text[0], text[1])
        return tokenizer.encode(text)


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
