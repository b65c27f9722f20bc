"""AsyncLLM: the engine thread behind an asyncio interface."""

from __future__ import annotations

import asyncio

import pytest

from tests.engine.test_engine import BLOCK_BYTES, GREEDY, prompts
from warpserve.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from warpserve.engine import async_engine
from warpserve.engine.async_engine import AsyncLLM
from warpserve.engine.llm_engine import LLMEngine
from warpserve.engine.protocol import EngineDeadError, EngineOverloadedError
from warpserve.request import SamplingParams


def start(folder, num_blocks=256, max_waiting=64) -> AsyncLLM:
    config = EngineConfig(
        model=ModelConfig(model=str(folder)),
        cache=CacheConfig(memory_gib=num_blocks * BLOCK_BYTES / 2**30),
        scheduler=SchedulerConfig(max_waiting=max_waiting),
    )
    return AsyncLLM(LLMEngine.from_config(config))


@pytest.fixture(scope="module")
def async_llm(tiny_llama_dir):
    engine = start(tiny_llama_dir)
    yield engine
    engine.shutdown()


async def collect(engine, prompt, params, request_id):
    outputs = [out async for out in engine.generate(prompt, params, request_id)]
    return outputs[-1]


def test_concurrent_requests_match_the_offline_engine(async_llm) -> None:
    async def main():
        return await asyncio.gather(
            *(collect(async_llm, p, GREEDY, f"c{i}") for i, p in enumerate(prompts(6)))
        )

    finals = asyncio.run(main())
    offline = [
        [o.outputs[0].token_ids for o in _offline(async_llm, [p])][0] for p in prompts(6)[:2]
    ]
    assert [f.outputs[0].token_ids for f in finals[:2]] == offline
    assert all(f.finished for f in finals)


def _offline(async_llm, batch):
    async def one():
        return [await collect(async_llm, p, GREEDY, f"solo-{i}") for i, p in enumerate(batch)]

    return asyncio.run(one())


def test_closing_the_stream_frees_blocks(async_llm) -> None:
    params = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)

    async def main():
        stream = async_llm.generate(prompts(1)[0], params, "leaver")
        async for out in stream:
            if len(out.outputs[0].token_ids) >= 3:
                break
        await stream.aclose()
        for _ in range(100):
            stats = async_llm.stats()
            if stats.num_running == 0 and stats.num_free_blocks == stats.num_total_blocks:
                return stats
            await asyncio.sleep(0.01)
        return async_llm.stats()

    stats = asyncio.run(main())
    assert stats.num_running == 0
    assert stats.num_free_blocks == stats.num_total_blocks


def test_bad_input_raises_value_error(async_llm) -> None:
    with pytest.raises(ValueError, match="context"):
        asyncio.run(collect(async_llm, [1] * 600, GREEDY, "too-long"))


def test_overload_raises_overloaded(tiny_llama_dir) -> None:
    async_llm = start(tiny_llama_dir, max_waiting=4)
    long = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)

    async def main():
        tasks = [
            asyncio.create_task(collect(async_llm, p, long, f"o{i}"))
            for i, p in enumerate(prompts(80))
        ]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, EngineOverloadedError)]
    done = [r for r in results if not isinstance(r, BaseException)]
    assert refused and done
    assert all(r.finished for r in done)
    async_llm.shutdown()


def test_health_probes_only_when_idle_and_fails_when_the_loop_is_down(
    tiny_llama_dir, monkeypatch
) -> None:
    engine = start(tiny_llama_dir, num_blocks=64)
    monkeypatch.setattr(async_engine, "HEALTHY_IF_STEPPED_WITHIN_S", 0.0)  # always probe
    probes = []
    real_generate = engine.generate

    def counting_generate(prompt, params, request_id):
        probes.append(request_id)
        return real_generate(prompt, params, request_id)

    monkeypatch.setattr(engine, "generate", counting_generate)
    asyncio.run(engine.check_health(timeout_s=10))
    assert len(probes) == 1
    monkeypatch.setattr(async_engine, "HEALTHY_IF_STEPPED_WITHIN_S", 60.0)
    asyncio.run(engine.check_health(timeout_s=10))  # it just stepped: no second probe
    assert len(probes) == 1
    engine.shutdown()
    with pytest.raises(EngineDeadError):
        asyncio.run(engine.check_health(timeout_s=10))
