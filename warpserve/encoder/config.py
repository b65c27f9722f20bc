"""Encoder settings: frozen dataclasses, every field defaulted and documented."""

from __future__ import annotations

from dataclasses import dataclass

TASKS = ("embed", "classify", "rerank")


@dataclass(frozen=True)
class AccuracyBudget:
    """How far an optimized variant may drift from the fp32 PyTorch reference."""

    min_mean_cosine: float = 0.99  # mean over validation texts of cos(variant, reference)
    max_spearman_drop: float = 0.01  # STS-B Spearman (x100 is the usual score) may drop this much

    def __post_init__(self) -> None:
        if not 0.0 < self.min_mean_cosine <= 1.0:
            raise ValueError("min_mean_cosine must be in (0, 1], e.g. 0.99")
        if self.max_spearman_drop < 0.0:
            raise ValueError("max_spearman_drop must be >= 0, e.g. 0.01")


@dataclass(frozen=True)
class BatcherConfig:
    """The dynamic batcher in front of the encoder session."""

    # padded tokens (rows x longest row) per forward pass. Small on purpose: on this CPU
    # (1 MiB L2 per core) all-MiniLM-L6-v2 int8 runs 1.3x more sentences/s per thread
    # in passes of ~256 tokens than in batches of 32 short sentences (~1,400 tokens), and
    # 1.2x more on 256-token texts one at a time than 8 together: the activations stay
    # in cache. Passes of 128 tokens lose it again to per-call overhead.
    max_batch_tokens: int = 256
    max_batch_size: int = 32  # rows per forward pass
    # how long the oldest waiting text may wait for company; 0: run as soon as the model is
    # free (batches still form from whatever arrived during the previous pass)
    max_wait_ms: float = 0.0
    max_queued_texts: int = 4096  # beyond this, new requests are refused (overloaded)
    num_workers: int = 1  # forward passes in flight at once, each on its own thread

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if self.max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be >= 1, e.g. 256")
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        if self.max_queued_texts < 1:
            raise ValueError("max_queued_texts must be >= 1")


@dataclass(frozen=True)
class ServiceConfig:
    """How `EmbeddingService` picks and runs its model."""

    num_threads: int = 2  # cores for forward passes
    # ONNX Runtime: forward passes run side by side, one thread each, instead of one pass
    # split over num_threads: no per-op thread hand-offs, and on a shared CPU a
    # descheduled thread stalls only its own batch (measured +17% batch-32 throughput on
    # 2 cores). PyTorch keeps one pass with num_threads intra-op threads.
    data_parallel: bool = True
    num_tokenizer_workers: int = 1  # tokenization runs here, off the event loop
    # repeated inputs skip tokenization: an LRU keyed by a digest of the text, capped at
    # this many (estimated) bytes; 0 turns it off
    tokenizer_cache_bytes: int = 32 * 2**20
    variant: str | None = None  # force a variant by name; None: the best validated one
    small_batch_tokens: int = 256  # batches up to this size run single-threaded (session.py)
    allow_spinning: bool = False  # ORT pool threads spin for work (only on an unshared CPU)
    batcher: BatcherConfig = BatcherConfig()

    def __post_init__(self) -> None:
        if self.num_threads < 1 or self.num_tokenizer_workers < 1:
            raise ValueError("num_threads and num_tokenizer_workers must be >= 1")
        if self.tokenizer_cache_bytes < 0:
            raise ValueError("tokenizer_cache_bytes must be >= 0 (0 turns the cache off)")


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not '{task}'")
    return task
