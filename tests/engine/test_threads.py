"""The thread policy of the serving engine: few sequences on one thread, many on all cores,
an explicit num_threads everywhere; applied from the engine thread itself."""

from __future__ import annotations

import asyncio

import pytest
import torch

from tests.engine.test_engine import BLOCK_BYTES, GREEDY, prompts
from warpserve.config import CacheConfig, EngineConfig, ModelConfig
from warpserve.engine.async_engine import AsyncLLM
from warpserve.engine.llm_engine import LLMEngine
from warpserve.engine.threads import ThreadPolicy, ThreadSetter


def test_auto_uses_one_thread_for_few_sequences_and_all_cores_for_many() -> None:
    policy = ThreadPolicy.from_config(ModelConfig(), num_cores=2)
    assert [policy.num_threads(n) for n in (0, 1, 4, 5, 32)] == [1, 1, 1, 2, 2]


def test_an_explicit_thread_count_holds_for_every_step() -> None:
    policy = ThreadPolicy.from_config(ModelConfig(num_threads=2), num_cores=8)
    assert {policy.num_threads(n) for n in (0, 1, 4, 5, 64)} == {2}


def test_one_core_never_asks_for_more() -> None:
    policy = ThreadPolicy.from_config(ModelConfig(few_seqs_num_threads=2), num_cores=1)
    assert {policy.num_threads(n) for n in (1, 64)} == {1}


@pytest.mark.parametrize("bad", [{"num_threads": 0}, {"few_seqs_num_threads": 0}])
def test_bad_thread_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        ModelConfig(**bad)


class RecordingSetter(ThreadSetter):
    """Records, per step, the sequence count and the thread count the engine thread sees."""

    def __init__(self, policy: ThreadPolicy) -> None:
        super().__init__(policy)
        self.seen: list[tuple[int, int]] = []

    def before_step(self, num_seqs: int) -> None:
        super().before_step(num_seqs)
        self.seen.append((num_seqs, torch.get_num_threads()))


def test_the_engine_thread_switches_with_the_load(tiny_llama_dir) -> None:  # noqa: ANN001
    config = EngineConfig(
        model=ModelConfig(model=str(tiny_llama_dir)),
        cache=CacheConfig(memory_gib=256 * BLOCK_BYTES / 2**30),
    )
    setter = RecordingSetter(ThreadPolicy(2, 1, few_seqs_max=1))
    engine = AsyncLLM(LLMEngine.from_config(config), setter)
    before = torch.get_num_threads()

    async def run(num_prompts: int) -> None:
        await asyncio.gather(
            *(
                _drain(engine.generate(p, GREEDY, f"{num_prompts}-{i}"))
                for i, p in enumerate(prompts(num_prompts))
            )
        )

    try:
        asyncio.run(run(1))
        asyncio.run(run(3))
    finally:
        engine.shutdown()
    assert any(n <= 1 and threads == 1 for n, threads in setter.seen), setter.seen
    assert any(n > 1 and threads == 2 for n, threads in setter.seen), setter.seen
    assert all(threads == (1 if n <= 1 else 2) for n, threads in setter.seen), setter.seen
    assert torch.get_num_threads() == before  # set in the engine thread, not this one


async def _drain(stream) -> None:  # noqa: ANN001
    async for _ in stream:
        pass
