"""`EmbeddingService`: what the server calls for embeddings, reranking and classification.

Path of one request: the caller's texts are tokenized in a worker pool (one truncation
rule, an LRU cache), queued in the dynamic batcher, run in length-grouped batches by the
batcher's thread on the best validated variant, and handed back in order on the caller's
event loop. A caller that stops waiting (client gone, or its deadline passed) marks its
texts cancelled; the batcher skips them. A forward pass that raises fails only the
requests whose texts it held (`BatchFailedError`); the next request runs as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from warpserve.encoder.batcher import DynamicBatcher, PendingRequest
from warpserve.encoder.config import ServiceConfig
from warpserve.encoder.models import EncoderSpec, load_spec
from warpserve.encoder.offline import normalize_rows
from warpserve.encoder.selection import select_backend
from warpserve.encoder.session import EncoderBackend
from warpserve.encoder.tokens import EncodedText, EncoderTokenizer, TextInput, collate

logger = logging.getLogger(__name__)


class EmbeddingService:
    """Thread-safe; owns the batcher thread and the tokenizer pool. Call close() when done."""

    def __init__(self, spec: EncoderSpec, backend: EncoderBackend, config: ServiceConfig) -> None:
        self.spec = spec
        self.model_name = spec.name
        self.task = spec.task
        self.max_input_tokens = spec.max_input_tokens
        self.variant = backend.name
        self._backend = backend
        self._tokenizer = EncoderTokenizer(
            spec.path, spec.max_input_tokens, config.tokenizer_cache_bytes
        )
        self._pool = ThreadPoolExecutor(
            config.num_tokenizer_workers, thread_name_prefix="encoder-tok"
        )
        parallel = config.data_parallel and backend.is_thread_safe
        num_workers = config.num_threads if parallel else 1
        self._batcher = DynamicBatcher(
            self._run_batch, dataclasses.replace(config.batcher, num_workers=num_workers)
        )
        self._is_closed = False

    @classmethod
    def start(
        cls,
        model: str,
        task: str = "embed",
        config: ServiceConfig = ServiceConfig(),
        cache_root: Path | None = None,
    ) -> EmbeddingService:
        """Uses the best validated variant from the optimize report (building and caching it
        on first use); without a report, builds and validates the default variant; falls
        back to PyTorch fp32 when no ONNX variant can be had."""
        spec = load_spec(model, task)
        backend = select_backend(spec, config, cache_root)
        logger.info("encoder %s (%s) runs variant %s", spec.name, spec.task, backend.name)
        return cls(spec, backend, config)

    @classmethod
    def from_name(cls, name: str, task: str = "auto") -> EmbeddingService:
        return cls.start(name, task)

    async def embed(
        self, texts: list[str], *, normalize: bool = True, truncate: bool = True
    ) -> tuple[list[list[float]], int]:
        """Embeddings in input order, and the number of tokens they took."""
        self._require_task("embed")
        rows, num_tokens = await self._forward(list(texts), truncate)
        vectors = normalize_rows(rows) if normalize else rows
        return vectors.tolist(), num_tokens

    async def rerank(self, query: str, texts: list[str], *, truncate: bool = True) -> list[float]:
        """Relevance of each text to the query, in (0, 1) (a sigmoid of the logit)."""
        self._require_task("rerank")
        rows, _ = await self._forward([(query, text) for text in texts], truncate)
        return (1.0 / (1.0 + np.exp(-rows[:, -1]))).tolist()

    async def classify(
        self, texts: list[str], *, truncate: bool = True
    ) -> list[list[tuple[str, float]]]:
        """Per text, (label, probability) for every label, most likely first."""
        self._require_task("classify")
        rows, _ = await self._forward(list(texts), truncate)
        exp = np.exp(rows - rows.max(axis=-1, keepdims=True))
        probabilities = exp / exp.sum(axis=-1, keepdims=True)
        labels = self.spec.labels
        return [
            sorted(zip(labels, map(float, row), strict=True), key=lambda p: -p[1])
            for row in probabilities
        ]

    def is_alive(self) -> bool:
        """Open, with every batcher thread running: cheap enough for each /health call (no
        lock, no forward pass)."""
        return not self._is_closed and self._batcher.is_alive

    @property
    def last_success_at(self) -> float | None:
        """`time.monotonic()` when a forward pass last succeeded; None before the first."""
        return self._batcher.last_success_at

    def close(self) -> None:
        self._is_closed = True
        self._batcher.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _require_task(self, task: str) -> None:
        if self.task != task:
            raise ValueError(f"task: model {self.model_name} serves '{self.task}', not '{task}'")

    async def _forward(self, inputs: list[TextInput], truncate: bool) -> tuple[np.ndarray, int]:
        if not inputs:
            return np.zeros((0, 0), dtype=np.float32), 0
        loop = asyncio.get_running_loop()
        encoded = await loop.run_in_executor(
            self._pool, self._tokenizer.encode_many, inputs, truncate
        )
        future: asyncio.Future = loop.create_future()
        request = PendingRequest(len(encoded), lambda result: _settle_soon(loop, future, result))
        self._batcher.submit(request, encoded)
        try:
            rows = await future
        except asyncio.CancelledError:
            request.is_cancelled = True  # the batcher drops the texts it has not run yet
            raise
        return np.stack(rows), sum(e.num_tokens for e in encoded)

    def _run_batch(self, encoded: list[EncodedText]) -> np.ndarray:
        inputs = collate(encoded, self._tokenizer.pad_id, self.spec.input_names)
        return self._backend.run(inputs)


def _settle_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future, result: object) -> None:
    """Called on the batcher thread; the future belongs to the caller's loop."""
    with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody waits
        loop.call_soon_threadsafe(_settle, future, result)


def _settle(future: asyncio.Future, result: object) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
