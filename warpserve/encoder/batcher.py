"""The dynamic batcher: texts from many requests -> length-grouped forward passes.

One thread owns the queue's consumer side and the model. Each cycle it waits until the
oldest waiting text has waited `max_wait_ms` (or enough work is queued), drops texts whose
caller has gone, groups what is left by token count under a padded-token budget, and
runs the group that holds the oldest text. Rows go back to their request by index, so a
request's results keep its order whatever batches its texts landed in.

A worker thread outlives any failure: whatever a cycle raises fails the requests it held
(`BatchFailedError`) and the thread takes the next batch, so one bad input or model error
costs one answer, never every later one.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from warpserve.encoder.config import BatcherConfig
from warpserve.encoder.tokens import EncodedText
from warpserve.engine.protocol import EngineDeadError, EngineOverloadedError

logger = logging.getLogger(__name__)


class BatchFailedError(RuntimeError):
    """The forward pass (or the bookkeeping) that held a request's texts raised. Not a
    ValueError: the caller's input was valid, the service failed on it."""


class PendingRequest:
    """One caller's texts. `on_done` gets the rows [num_texts] or an exception, once."""

    def __init__(self, num_texts: int, on_done: Callable[[list[np.ndarray] | BaseException], None]):
        self._rows: list[np.ndarray | None] = [None] * num_texts
        self._remaining = num_texts
        self._on_done = on_done
        self._lock = threading.Lock()
        self.is_cancelled = False  # set by the caller's side when it stops waiting
        self.is_finished = False

    def set_row(self, index: int, row: np.ndarray) -> None:
        with self._lock:
            self._rows[index] = row
            self._remaining -= 1
            finished = self._remaining == 0 and not self.is_finished
            self.is_finished = self.is_finished or finished
        if finished:
            self._on_done(self._rows)  # type: ignore[arg-type]

    def fail(self, error: BaseException) -> None:
        with self._lock:
            if self.is_finished:
                return
            self.is_finished = True
        self._on_done(error)


_arrival_counter = itertools.count()


@dataclass
class WorkItem:
    encoded: EncodedText
    request: PendingRequest
    index: int  # the text's position in its request
    arrival: float = field(default_factory=time.monotonic)
    sequence: int = field(default_factory=lambda: next(_arrival_counter))  # FIFO tie-break

    @property
    def num_tokens(self) -> int:
        return self.encoded.num_tokens


def plan_batches(
    items: list[WorkItem], max_batch_tokens: int, max_batch_size: int
) -> list[list[WorkItem]]:
    """Items grouped by token count: each batch holds at most max_batch_size rows and at
    most max_batch_tokens padded tokens (rows x longest row). A single item longer than the
    budget runs alone. Batches come out oldest-first (by their oldest item's arrival), and
    among batches of texts that arrived together, the largest first: with several workers
    the last batch to finish is then a small one (longest-processing-time-first; measured
    +6% sentences/s on 2 workers over ascending order)."""
    batches: list[list[WorkItem]] = []
    current: list[WorkItem] = []
    for item in sorted(items, key=lambda i: (i.num_tokens, i.sequence)):
        padded = (len(current) + 1) * item.num_tokens  # sorted: the new item is the longest
        if current and (len(current) >= max_batch_size or padded > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return sorted(batches, key=lambda b: (min(i.arrival for i in b), -_padded_tokens(b)))


def _padded_tokens(batch: list[WorkItem]) -> int:
    return len(batch) * max(i.num_tokens for i in batch)


RunBatch = Callable[[list[EncodedText]], np.ndarray]  # texts -> rows [len(texts), D]


class DynamicBatcher:
    """Thread-safe `submit`; `num_workers` threads each take the next due batch and run
    `run_batch` (which must then be thread-safe: an ONNX Runtime session is)."""

    def __init__(self, run_batch: RunBatch, config: BatcherConfig = BatcherConfig()) -> None:
        self._run_batch = run_batch
        self._config = config
        self._waiting: list[WorkItem] = []
        self._cond = threading.Condition()
        self._is_closed = False
        self.last_success_at: float | None = None  # time.monotonic() of the last good batch
        self.num_failed_batches = 0
        self._workers = [
            threading.Thread(target=self._loop, name=f"encoder-batcher-{i}", daemon=True)
            for i in range(config.num_workers)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, request: PendingRequest, encoded: list[EncodedText]) -> None:
        now = time.monotonic()  # one arrival per request: its batches order by size
        items = [WorkItem(e, request, index, now) for index, e in enumerate(encoded)]
        with self._cond:
            if self._is_closed:
                raise EngineDeadError("the encoder batcher is closed")
            if len(self._waiting) + len(items) > self._config.max_queued_texts:
                raise EngineOverloadedError(
                    f"{len(self._waiting)} texts are waiting (limit {self._config.max_queued_texts})"
                )
            self._waiting.extend(items)
            self._cond.notify_all()

    @property
    def num_waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @property
    def is_alive(self) -> bool:
        """Open, with every worker thread running (cheap: no lock, no model call)."""
        return not self._is_closed and all(worker.is_alive() for worker in self._workers)

    def close(self) -> None:
        with self._cond:
            self._is_closed = True
            leftover, self._waiting = self._waiting, []
            self._cond.notify_all()
        for item in leftover:
            item.request.fail(EngineDeadError("the encoder batcher closed"))
        for worker in self._workers:
            worker.join(timeout=30)

    def _loop(self) -> None:
        while True:
            batch: list[WorkItem] = []
            try:
                next_batch = self._next_batch()
                if next_batch is None:
                    return
                batch = next_batch
                self._run(batch)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any batch
                logger.exception("encoder batch of %d texts failed", len(batch))
                # A failure while planning leaves no batch: fail what is queued, or the
                # same input would fail the next cycle too.
                self._fail(batch or self._take_waiting(), exc)

    def _take_waiting(self) -> list[WorkItem]:
        with self._cond:
            taken, self._waiting = self._waiting, []
        return taken

    def _fail(self, batch: list[WorkItem], exc: Exception) -> None:
        self.num_failed_batches += 1
        error = BatchFailedError(f"the encoder failed on this batch: {type(exc).__name__}: {exc}")
        for item in batch:
            item.request.fail(error)

    def _next_batch(self) -> list[WorkItem] | None:
        """Blocks until a batch is due; None once closed."""
        with self._cond:
            while True:
                while not self._waiting and not self._is_closed:
                    self._cond.wait()
                if self._is_closed:
                    return None
                delay = self._delay_left()
                if delay <= 0:
                    break
                self._cond.wait(delay)
            self._waiting = [i for i in self._waiting if not i.request.is_cancelled]
            if not self._waiting:
                return []
            config = self._config
            batch = plan_batches(self._waiting, config.max_batch_tokens, config.max_batch_size)[0]
            chosen = {id(item) for item in batch}
            self._waiting = [i for i in self._waiting if id(i) not in chosen]
            return batch

    def _delay_left(self) -> float:
        """Seconds the oldest waiting text may still wait; 0 once a full batch is queued."""
        config = self._config
        num_tokens = sum(i.num_tokens for i in self._waiting)
        if len(self._waiting) >= config.max_batch_size or num_tokens >= config.max_batch_tokens:
            return 0.0
        oldest = min(i.arrival for i in self._waiting)
        return oldest + config.max_wait_ms / 1e3 - time.monotonic()

    def _run(self, batch: list[WorkItem]) -> None:
        """Raises whatever the model raises; _loop fails the batch's requests."""
        batch = [item for item in batch if not item.request.is_cancelled]  # gone while queued
        if not batch:
            return
        rows = self._run_batch([item.encoded for item in batch])
        if len(rows) != len(batch):
            raise RuntimeError(f"the model returned {len(rows)} rows for {len(batch)} texts")
        for item, row in zip(batch, rows, strict=True):
            item.request.set_row(item.index, row)
        self.last_success_at = time.monotonic()
