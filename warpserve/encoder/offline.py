"""Offline encoding for validation and benchmarks: length-sorted batches, no batcher thread."""

from __future__ import annotations

import numpy as np

from warpserve.encoder.session import EncoderBackend
from warpserve.encoder.tokens import EncodedText, EncoderTokenizer, TextInput, collate


def length_sorted_batches(encoded: list[EncodedText], batch_size: int) -> list[list[int]]:
    """Row indices grouped by token count, so each batch pads to a near-equal length."""
    order = sorted(range(len(encoded)), key=lambda i: encoded[i].num_tokens)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def encode_texts(
    backend: EncoderBackend,
    tokenizer: EncoderTokenizer,
    texts: list[TextInput],
    input_names: tuple[str, ...],
    batch_size: int = 32,
) -> np.ndarray:
    """[len(texts), D] raw outputs (unnormalized embeddings or logits), in input order."""
    encoded = tokenizer.encode_many(texts, truncate=True)
    return run_encoded(backend, encoded, tokenizer.pad_id, input_names, batch_size)


def run_encoded(
    backend: EncoderBackend,
    encoded: list[EncodedText],
    pad_id: int,
    input_names: tuple[str, ...],
    batch_size: int,
) -> np.ndarray:
    rows: list[np.ndarray | None] = [None] * len(encoded)
    for batch in length_sorted_batches(encoded, batch_size):
        outputs = backend.run(collate([encoded[i] for i in batch], pad_id, input_names))
        for index, output in zip(batch, outputs, strict=True):
            rows[index] = output
    return np.stack(rows)  # type: ignore[arg-type]


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
