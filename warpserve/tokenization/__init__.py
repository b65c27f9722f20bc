"""Tokenizers: the `Tokenizer` wrapper and GGUF tokenizer conversion (cached on disk)."""

from warpserve.tokenization.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
