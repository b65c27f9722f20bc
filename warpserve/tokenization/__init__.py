"""Tokenizers: the `Tokenizer` wrapper, GGUF tokenizer conversion, and an encode cache."""

from warpserve.tokenization.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
