"""No fault ends the engine: the real AsyncLLM, Scheduler, KV cache manager and
detokenizer over a tiny Llama whose steps are slowed to a few milliseconds (so races
show up) and can be made to raise or stall (`FaultyRunner`).

After every test: the loop is alive, nothing is in flight and every KV block is free.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tests.engine.test_async_engine import start
from tests.engine.test_engine import GREEDY, prompts
from warpserve.engine import async_engine
from warpserve.engine.async_engine import AsyncLLM
from warpserve.engine.protocol import EngineDeadError, RequestFailedError
from warpserve.request import SamplingParams

MARK = 7  # a prompt holding this token id makes the forward pass raise


class FaultyRunner:
    """Wraps the engine's model runner: every step sleeps step_s; a step over a marked
    token raises; a step waits while `running` is clear; `die` raises past the engine."""

    def __init__(self, engine: AsyncLLM, step_s: float = 0.003) -> None:
        self._execute = engine.engine.runner.execute
        self.step_s = step_s
        self.mark: int | None = None
        self.die = False
        self.running = threading.Event()
        self.running.set()
        self.num_steps = 0
        engine.engine.runner.execute = self.execute

    def execute(self, out):  # noqa: ANN001, ANN201
        self.num_steps += 1
        time.sleep(self.step_s)
        self.running.wait(timeout=30)
        if self.die:
            raise SystemExit("the loop thread is killed")  # not an Exception: escapes step()
        if self.mark is not None and any(self.mark in s.token_ids for s in out.sequences):
            raise RuntimeError("a marked token")
        return self._execute(out)


@pytest.fixture
def engine(tiny_llama_dir):  # noqa: ANN001, ANN201
    engine = start(tiny_llama_dir, num_blocks=256, max_waiting=256)
    yield engine
    assert_clean(engine)
    engine.shutdown()


@pytest.fixture
def faulty(engine: AsyncLLM) -> FaultyRunner:
    return FaultyRunner(engine)


def assert_clean(engine: AsyncLLM) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = engine.stats()
        idle = stats.num_running == 0 and stats.num_waiting == 0
        if idle and stats.num_free_blocks == stats.num_total_blocks and not engine._streams:
            break
        time.sleep(0.01)
    stats = engine.stats()
    assert engine.is_alive
    assert (stats.num_running, stats.num_waiting) == (0, 0)
    assert stats.num_free_blocks == stats.num_total_blocks
    assert not engine.engine.has_unfinished_requests()


async def final(engine: AsyncLLM, prompt: list[int], params: SamplingParams, request_id: str):  # noqa: ANN201
    last = None
    async for out in engine.generate(prompt, params, request_id):
        last = out
    return last


def solo_tokens(engine: AsyncLLM, batch: list[list[int]]) -> list[list[int]]:
    async def main():  # noqa: ANN202
        return [await final(engine, p, GREEDY, f"solo-{i}") for i, p in enumerate(batch)]

    return [out.outputs[0].token_ids for out in asyncio.run(main())]


@pytest.mark.parametrize("during_step", [False, True], ids=["idle", "during-300ms-step"])
def test_cancel_before_admission_100_times(
    engine: AsyncLLM, faulty: FaultyRunner, during_step: bool
) -> None:
    long = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)

    async def main() -> None:
        background = None
        if during_step:
            faulty.step_s = 0.3
            background = asyncio.ensure_future(final(engine, prompts(1)[0], long, "slow"))
            await asyncio.sleep(0.05)  # its first step has begun
        for i in range(100):
            task = asyncio.ensure_future(final(engine, [5, 6, 8], long, f"c{i}"))
            await asyncio.sleep(0 if i % 2 else 0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        faulty.step_s = 0.003
        if background is not None:
            assert (await background).finished
        ok = await final(engine, [5, 6, 8], GREEDY, "after")
        assert ok.finished and len(ok.outputs[0].token_ids) == GREEDY.max_tokens

    asyncio.run(main())


def test_a_step_that_raises_fails_only_the_request_that_caused_it(
    engine: AsyncLLM, faulty: FaultyRunner
) -> None:
    bystanders = [[t for t in p if t != MARK] for p in prompts(4, seed=3)]
    expected = solo_tokens(engine, bystanders)
    faulty.mark = MARK

    async def main():  # noqa: ANN202
        marked = asyncio.ensure_future(final(engine, [5, MARK, 9, 11], GREEDY, "marked"))
        others = [
            asyncio.ensure_future(final(engine, p, GREEDY, f"b{i}"))
            for i, p in enumerate(bystanders)
        ]
        with pytest.raises(RequestFailedError, match="marked token"):
            await marked
        return await asyncio.gather(*others)

    outputs = asyncio.run(main())
    assert [out.outputs[0].token_ids for out in outputs] == expected
    assert solo_tokens(engine, bystanders[:1]) == expected[:1]  # the next request succeeds
    assert engine.liveness().num_restarts == 0


def test_a_dead_loop_thread_is_restarted(engine: AsyncLLM, faulty: FaultyRunner) -> None:
    params = SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True)

    async def main() -> None:
        in_flight = asyncio.ensure_future(final(engine, prompts(1)[0], params, "in-flight"))
        await asyncio.sleep(0.05)
        faulty.die = True
        with pytest.raises(EngineDeadError):
            await in_flight
        faulty.die = False
        for _ in range(200):  # the supervisor restarts it within milliseconds
            if engine.liveness().is_alive:
                break
            await asyncio.sleep(0.01)
        after = await final(engine, [5, 6, 8], GREEDY, "after")
        assert after.finished

    asyncio.run(main())
    assert engine.liveness().num_restarts == 1


def test_health_reports_a_step_that_runs_past_its_timeout(
    engine: AsyncLLM, faulty: FaultyRunner
) -> None:
    async def main() -> None:
        faulty.running.clear()  # the next step hangs
        stuck = asyncio.ensure_future(final(engine, [5, 6, 8], GREEDY, "stuck"))
        await asyncio.sleep(0.3)
        with pytest.raises(EngineDeadError, match="running for"):
            await engine.check_health(timeout_s=0.2)
        faulty.running.set()
        assert (await stuck).finished
        await engine.check_health(timeout_s=5)

    asyncio.run(main())


def test_a_slow_reader_holds_one_output_not_a_queue(engine: AsyncLLM, faulty: FaultyRunner) -> None:
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)

    async def main() -> list[int]:
        seen = []
        stream = engine.generate([5, 6, 8], params, "slow-reader")
        async for out in stream:
            seen.append(len(out.outputs[0].token_ids))
            if len(seen) == 1:
                await asyncio.sleep(0.5)  # the engine finishes all 40 meanwhile
        return seen

    seen = asyncio.run(main())
    assert seen[-1] == 40
    assert len(seen) == 2  # the first output, then only the newest: nothing queued up
    assert faulty.num_steps >= 40


@pytest.mark.parametrize(
    "params",
    [
        dict(top_p=5e-324),
        dict(top_p=1e-45, top_k=3, min_p=5e-324),
        dict(temperature=1e-50),
        dict(temperature=-0.0),
        dict(presence_penalty=-2.0, frequency_penalty=2.0, repetition_penalty=0.01),
        dict(seed=2**63 - 1, n=2),
        dict(seed=-(2**63)),
    ],
)
def test_sampling_at_float_edges_never_hurts_the_engine(engine: AsyncLLM, params: dict) -> None:
    sampled = SamplingParams(max_tokens=8, ignore_eos=True, **params)
    greedy_tokens = solo_tokens(engine, [[5, 6, 8]])[0][:8]

    async def main():  # noqa: ANN202
        return await final(engine, [5, 6, 8], sampled, "edge")

    out = asyncio.run(main())
    assert out.finished and all(len(c.token_ids) == 8 for c in out.outputs)
    if sampled.temperature == 0.0 or sampled.top_p < 1e-30:  # greedy in effect
        assert out.outputs[0].token_ids == greedy_tokens


def test_out_of_range_penalty_is_refused_before_the_engine() -> None:
    with pytest.raises(ValueError, match="repetition_penalty"):
        SamplingParams(repetition_penalty=1e-300)


def test_health_skips_the_probe_while_stepping(engine: AsyncLLM, monkeypatch) -> None:  # noqa: ANN001
    async def main() -> None:
        await final(engine, [5, 6, 8], GREEDY, "warm")
        submitted = len(engine.engine.groups)
        await engine.check_health(timeout_s=1)  # stepped just now: answered without a probe
        assert len(engine.engine.groups) == submitted
        monkeypatch.setattr(async_engine, "HEALTHY_IF_STEPPED_WITHIN_S", 0.0)
        await engine.check_health(timeout_s=5)  # idle: a one-token probe

    asyncio.run(main())
