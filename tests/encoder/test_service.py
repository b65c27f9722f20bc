"""EmbeddingService on tiny models: batched == single, order, truncation, heads, cancellation."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from tests.encoder.conftest import SENTENCES
from warpserve.encoder.artifacts import read_report
from warpserve.encoder.config import BatcherConfig, ServiceConfig
from warpserve.encoder.models import load_spec
from warpserve.encoder.service import EmbeddingService

# the same int8 graph, batched or alone: dynamic activation scales see different rows
INT8_BATCH_ATOL = 0.05
FP32_BATCH_ATOL = 1e-5


def _config(variant: str, num_threads: int = 1, **batcher) -> ServiceConfig:  # noqa: ANN003
    batcher_config = BatcherConfig(**batcher)
    return ServiceConfig(num_threads=num_threads, variant=variant, batcher=batcher_config)


@pytest.fixture
def service_factory(cache_root):  # noqa: ANN001, ANN201
    started: list[EmbeddingService] = []

    def start(folder, task="embed", variant="onnx-fused-fp32", num_threads=1, **batcher):  # noqa: ANN001, ANN003, ANN202
        config = _config(variant, num_threads, **batcher)
        service = EmbeddingService.start(str(folder), task, config, cache_root)
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()


@pytest.mark.parametrize(
    ("variant", "atol"),
    [("onnx-fused-fp32", FP32_BATCH_ATOL), ("onnx-int8-lean-smooth", INT8_BATCH_ATOL)],
)
def test_batched_equals_single_and_order_is_kept(
    tiny_models, service_factory, variant, atol
) -> None:  # noqa: ANN001
    # two threads: two single-threaded sessions run batches side by side
    service = service_factory(
        tiny_models["mean"], variant=variant, num_threads=2, max_wait_ms=20, max_batch_size=4
    )

    async def scenario() -> tuple[list, list]:
        together = service.embed(SENTENCES)
        alone = [service.embed([s]) for s in SENTENCES]
        return await asyncio.gather(together, *alone)

    (batched, num_tokens), *singles = asyncio.run(scenario())
    np.testing.assert_allclose(np.array(batched), np.array([s[0][0] for s in singles]), atol=atol)
    assert num_tokens == sum(s[1] for s in singles)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_truncation_rule_is_shared_by_every_route(tiny_models, service_factory) -> None:  # noqa: ANN001
    service = service_factory(tiny_models["mean"])
    long_text = "the quick brown fox jumps over the lazy dog " * 20
    with pytest.raises(
        ValueError, match=f"the model's limit is {service.max_input_tokens}; pass truncate=true"
    ):
        asyncio.run(service.embed([long_text], truncate=False))
    vectors, num_tokens = asyncio.run(service.embed([long_text], truncate=True))
    assert num_tokens == service.max_input_tokens and len(vectors) == 1
    reranker = service_factory(tiny_models["rerank"], "rerank")
    with pytest.raises(ValueError, match="pass truncate=true"):
        asyncio.run(reranker.rerank("the dog", [long_text], truncate=False))


def test_heads_rerank_and_classify(tiny_models, service_factory) -> None:  # noqa: ANN001
    reranker = service_factory(tiny_models["rerank"], "rerank")
    scores = asyncio.run(reranker.rerank("the dog", SENTENCES))
    assert len(scores) == len(SENTENCES) and all(0.0 < s < 1.0 for s in scores)
    classifier = service_factory(tiny_models["classify"], "classify")
    results = asyncio.run(classifier.classify(SENTENCES[:2]))
    for labels in results:
        assert {name for name, _ in labels} == {"label_0", "label_1", "label_2"}
        assert sum(p for _, p in labels) == pytest.approx(1.0, abs=1e-5)
        assert labels[0][1] == max(p for _, p in labels)
    with pytest.raises(ValueError, match="serves 'classify'"):
        asyncio.run(classifier.embed(["x"]))


def test_a_cancelled_caller_costs_no_forward_pass(tiny_models, service_factory) -> None:  # noqa: ANN001
    service = service_factory(tiny_models["mean"], max_wait_ms=0)
    seen: list[int] = []
    gate = threading.Event()
    real_run = service._backend.run

    def slow_run(inputs):  # noqa: ANN001, ANN202
        seen.append(int(inputs["input_ids"].shape[0]))
        gate.wait(timeout=10)
        return real_run(inputs)

    service._backend.run = slow_run

    async def scenario() -> None:
        first = asyncio.create_task(service.embed(["the dog"]))
        while not seen:  # the batcher thread is inside the first forward pass
            await asyncio.sleep(0.001)
        doomed = asyncio.create_task(service.embed(SENTENCES))
        await asyncio.sleep(0.05)
        doomed.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        await first
        await service.embed(["stocks fell"])

    asyncio.run(scenario())
    assert seen == [1, 1]  # the six cancelled texts never ran


def test_without_a_report_the_default_variant_is_validated_and_cached(
    tiny_models, tmp_path
) -> None:  # noqa: ANN001
    config = ServiceConfig(num_threads=1)
    service = EmbeddingService.start(str(tiny_models["cls"]), "embed", config, tmp_path)
    try:
        report = read_report(load_spec(str(tiny_models["cls"])), tmp_path)
        assert report is not None and report["chosen"] == service.variant
        vectors, _ = asyncio.run(service.embed(["the dog"]))
        assert len(vectors[0]) == 32
    finally:
        service.close()
    again = EmbeddingService.start(str(tiny_models["cls"]), "embed", config, tmp_path)
    assert again.variant == service.variant  # read from the report, no second validation
    again.close()
