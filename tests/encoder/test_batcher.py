"""The dynamic batcher with a recording fake model: order, budget, cancellation, overload."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from warpserve.encoder.batcher import (
    BatchFailedError,
    DynamicBatcher,
    PendingRequest,
    WorkItem,
    plan_batches,
)
from warpserve.encoder.config import BatcherConfig
from warpserve.encoder.tokens import EncodedText
from warpserve.engine.protocol import EngineOverloadedError


def text(marker: int, num_tokens: int) -> EncodedText:
    """A fake encoded text; its first id identifies it in the model's output."""
    return EncodedText((marker,) + (7,) * (num_tokens - 1), (0,) * num_tokens)


class RecordingModel:
    """Returns [marker, num_tokens] per row; records batches; can hold the first batch."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[EncodedText]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, encoded: list[EncodedText]) -> np.ndarray:
        self.batches.append(encoded)
        self.started.set()
        self.release.wait(timeout=10)
        return np.array([[e.ids[0], e.num_tokens] for e in encoded], dtype=np.float32)


class Waiter:
    def __init__(self, num_texts: int) -> None:
        self.done = threading.Event()
        self.result: object = None
        self.request = PendingRequest(num_texts, self._finish)

    def _finish(self, result: object) -> None:
        self.result = result
        self.done.set()

    def rows(self) -> list[list[float]]:
        assert self.done.wait(timeout=10), "request never finished"
        assert isinstance(self.result, list), self.result
        return [row.tolist() for row in self.result]


def submit(batcher: DynamicBatcher, texts: list[EncodedText]) -> Waiter:
    waiter = Waiter(len(texts))
    batcher.submit(waiter.request, texts)
    return waiter


def test_plan_respects_the_token_budget_and_keeps_every_item() -> None:
    lengths = [3, 17, 5, 9, 30, 4, 12, 8, 64, 2]
    request = PendingRequest(len(lengths), lambda result: None)
    items = [WorkItem(text(i, n), request, i) for i, n in enumerate(lengths)]
    batches = plan_batches(items, max_batch_tokens=40, max_batch_size=3)
    assert sorted(id(i) for b in batches for i in b) == sorted(id(i) for i in items)
    for batch in batches:
        longest = max(i.num_tokens for i in batch)
        assert len(batch) <= 3
        assert len(batch) * longest <= 40 or len(batch) == 1  # 64 tokens alone exceeds 40
    assert items[0] in batches[0]  # the oldest item's batch runs first


@pytest.mark.parametrize("num_workers", [1, 2])
def test_results_keep_request_order_across_batches(num_workers: int) -> None:
    model = RecordingModel()
    config = BatcherConfig(
        max_batch_tokens=64, max_batch_size=4, max_wait_ms=20, num_workers=num_workers
    )
    batcher = DynamicBatcher(model, config)
    try:
        lengths = [9, 2, 30, 5, 2, 17, 3, 11]
        first = submit(batcher, [text(100 + i, n) for i, n in enumerate(lengths)])
        second = submit(batcher, [text(200, 4), text(201, 40)])
        assert first.rows() == [[100 + i, n] for i, n in enumerate(lengths)]
        assert second.rows() == [[200, 4], [201, 40]]
        for batch in model.batches:
            assert len(batch) <= 4 and len(batch) * max(e.num_tokens for e in batch) <= 64
        assert len(model.batches) > 1
    finally:
        batcher.close()


def test_requests_arriving_within_the_wait_share_a_batch() -> None:
    model = RecordingModel()
    batcher = DynamicBatcher(model, BatcherConfig(max_wait_ms=200))
    try:
        a, b = submit(batcher, [text(1, 5)]), submit(batcher, [text(2, 6)])
        a.rows(), b.rows()
        assert len(model.batches) == 1
    finally:
        batcher.close()


def test_cancelled_requests_are_skipped() -> None:
    model = RecordingModel(hold_first=True)
    batcher = DynamicBatcher(model, BatcherConfig(max_wait_ms=0))
    try:
        running = submit(batcher, [text(1, 4)])
        assert model.started.wait(timeout=10)  # the model is busy with `running`
        gone, kept = submit(batcher, [text(2, 4), text(3, 9)]), submit(batcher, [text(4, 4)])
        gone.request.is_cancelled = True
        model.release.set()
        assert kept.rows() == [[4, 4]] and running.rows() == [[1, 4]]
        ran = {e.ids[0] for batch in model.batches for e in batch}
        assert ran == {1, 4}
        assert not gone.done.is_set()
    finally:
        batcher.close()


def test_full_queue_refuses_new_work_and_close_fails_the_rest() -> None:
    model = RecordingModel(hold_first=True)
    batcher = DynamicBatcher(model, BatcherConfig(max_queued_texts=2, max_wait_ms=0))
    running = submit(batcher, [text(1, 4)])
    assert model.started.wait(timeout=10)
    queued = submit(batcher, [text(2, 4), text(3, 4)])
    with pytest.raises(EngineOverloadedError):
        submit(batcher, [text(4, 4)])
    model.release.set()
    running.rows()
    queued.rows()
    batcher.close()
    assert batcher.num_waiting == 0


def test_model_errors_reach_every_caller_in_the_batch() -> None:
    def broken(encoded: list[EncodedText]) -> np.ndarray:
        raise RuntimeError("kernel exploded")

    batcher = DynamicBatcher(broken, BatcherConfig(max_wait_ms=50))
    try:
        a, b = submit(batcher, [text(1, 3)]), submit(batcher, [text(2, 3)])
        for waiter in (a, b):
            assert waiter.done.wait(timeout=10) and isinstance(waiter.result, RuntimeError)
    finally:
        batcher.close()


class FailingModel:
    """Fails in the ways a model can, once each, then answers like RecordingModel."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures

    def __call__(self, encoded: list[EncodedText]) -> np.ndarray:
        rows = np.array([[e.ids[0], e.num_tokens] for e in encoded], dtype=np.float32)
        failure = self.failures.pop(0) if self.failures else None
        if failure == "raise":
            raise RuntimeError("kernel exploded")
        if failure == "short":  # once outside the batcher's try block: the thread died
            return rows[:-1]
        return rows


@pytest.mark.parametrize("failure", ["raise", "short"])
def test_a_failed_batch_fails_its_requests_and_the_worker_goes_on(failure: str) -> None:
    model = FailingModel([failure])
    batcher = DynamicBatcher(model, BatcherConfig(max_wait_ms=0))
    try:
        doomed = submit(batcher, [text(1, 3), text(2, 3)])
        assert doomed.done.wait(timeout=10)
        assert isinstance(doomed.result, BatchFailedError)
        assert batcher.is_alive and batcher.num_failed_batches == 1
        assert submit(batcher, [text(3, 3)]).rows() == [[3.0, 3.0]]
        assert batcher.last_success_at is not None
    finally:
        batcher.close()
    assert not batcher.is_alive


def test_a_failure_while_planning_fails_the_queue_and_the_worker_goes_on(monkeypatch) -> None:  # noqa: ANN001
    model = RecordingModel(hold_first=True)
    batcher = DynamicBatcher(model, BatcherConfig(max_wait_ms=0))
    try:
        first = submit(batcher, [text(1, 3)])
        assert model.started.wait(timeout=10)
        real_plan = plan_batches
        calls = []

        def broken_plan(*args):  # noqa: ANN002, ANN202
            calls.append(1)
            if len(calls) == 1:
                raise KeyError("planner bug")
            return real_plan(*args)

        monkeypatch.setattr("warpserve.encoder.batcher.plan_batches", broken_plan)
        queued = submit(batcher, [text(2, 3)])
        model.release.set()
        assert first.rows() == [[1.0, 3.0]]
        assert queued.done.wait(timeout=10) and isinstance(queued.result, BatchFailedError)
        assert submit(batcher, [text(4, 3)]).rows() == [[4.0, 3.0]]
    finally:
        batcher.close()
