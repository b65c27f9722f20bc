"""`python -m tests.server.overhead`: does the HTTP layer stall the engine's steps?

The same AsyncLLM (the bundled SmolLM2-135M) and workload (8 requests, 4 at a time, 48
prompt words, 48 output tokens, greedy) three ways, in interleaved rounds:
direct (asyncio calls, no HTTP), http (uvicorn in this process, streaming client in a
subprocess), http+tokenize (plus a client posting 20 KB texts to /tokenize in a loop).
Reports output tokens/s, the client's inter-chunk gaps and the engine's step times.
Results and their reading: docs/ARCHITECTURE.md, "Server".
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.server.conftest import LiveServer
from warpserve.config import CacheConfig, EngineConfig, ModelConfig
from warpserve.engine.async_engine import AsyncLLM
from warpserve.request import SamplingParams
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig

CONCURRENCY, NUM_REQUESTS, OUTPUT_TOKENS = 4, 8, 48
TEXT = Path(__file__).resolve().parents[3] / "shared" / "data" / "wikitext2-valid.txt"

CLIENT = r"""
import asyncio, json, sys, time, httpx
url, prompts, conc, out = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
async def main():
    sem = asyncio.Semaphore(conc); gaps = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as c:
        async def one(p):
            async with sem:
                last = None
                body = {"prompt": p, "max_tokens": out, "temperature": 0, "ignore_eos": True,
                        "stream": True}
                async with c.stream("POST", "/v1/completions", json=body) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            now = time.perf_counter()
                            if last is not None: gaps.append(now - last)
                            last = now
        t = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts))
        print(json.dumps([time.perf_counter() - t, gaps]))
asyncio.run(main())
"""

HAMMER = r"""
import sys, httpx
url, path = sys.argv[1], sys.argv[2]
text = open(path).read()[:20000]
with httpx.Client(base_url=url, timeout=60) as c:
    while True:
        c.post("/tokenize", json={"inputs": text})
"""


class StepTimer:
    """Wraps LLMEngine.step (runs on the engine thread) to record each step's duration."""

    def __init__(self, engine: AsyncLLM) -> None:
        self.durations: list[float] = []
        self._step = engine.engine.step
        engine.engine.step = self._timed

    def _timed(self):  # noqa: ANN202
        start = time.perf_counter()
        out = self._step()
        self.durations.append(time.perf_counter() - start)
        return out


def make_prompts() -> list[str]:
    words = TEXT.read_text(encoding="utf-8").split()
    rng = random.Random(0)
    starts = [rng.randrange(len(words) - 100) for _ in range(NUM_REQUESTS)]
    return [" ".join(words[s : s + 48]) for s in starts]


async def direct(engine: AsyncLLM, prompts: list[str]) -> tuple[float, list[float]]:
    params = SamplingParams(max_tokens=OUTPUT_TOKENS, temperature=0.0, ignore_eos=True)
    limit, gaps = asyncio.Semaphore(CONCURRENCY), []

    async def one(index: int, prompt: str) -> None:
        async with limit:
            last = None
            ids = engine.tokenizer.encode(prompt)
            async for _ in engine.generate(ids, params, f"d{time.time_ns()}-{index}"):
                now = time.perf_counter()
                if last is not None:
                    gaps.append(now - last)
                last = now

    start = time.perf_counter()
    await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    return time.perf_counter() - start, gaps


def over_http(url: str, prompts: list[str], hammer: bool) -> tuple[float, list[float]]:
    noise = None
    if hammer:
        noise = subprocess.Popen([sys.executable, "-c", HAMMER, url, str(TEXT)])
    try:
        args = [url, json.dumps(prompts), str(CONCURRENCY), str(OUTPUT_TOKENS)]
        done = subprocess.run(
            [sys.executable, "-c", CLIENT, *args], capture_output=True, text=True, check=True
        )
    finally:
        if noise is not None:
            noise.kill()
            noise.wait()
    wall, gaps = json.loads(done.stdout)
    return wall, gaps


def row(wall: float, gaps: list[float], steps: list[float]) -> dict[str, float]:
    ordered = sorted(steps)
    return {
        "tok_per_s": NUM_REQUESTS * OUTPUT_TOKENS / wall,
        "itl_p50_ms": 1000 * statistics.median(gaps),
        "itl_p90_ms": 1000 * statistics.quantiles(gaps, n=10)[-1],
        "step_p50_ms": 1000 * ordered[len(ordered) // 2],
        "step_p90_ms": 1000 * ordered[int(len(ordered) * 0.9)],
    }


def main() -> None:
    config = EngineConfig(
        model=ModelConfig(model="smollm2-135m-instruct"), cache=CacheConfig(memory_gib=0.5)
    )
    engine = AsyncLLM.from_config(config)
    timer = StepTimer(engine)
    prompts = make_prompts()
    live = LiveServer(create_app(engine, None, ServerConfig())).start()
    asyncio.run(direct(engine, prompts))  # warm-up
    results: dict[str, list[dict[str, float]]] = {"direct": [], "http": [], "http+tokenize": []}
    for round_index in range(2):
        for mode, rows in results.items():
            timer.durations.clear()
            if mode == "direct":
                wall, gaps = asyncio.run(direct(engine, prompts))
            else:
                wall, gaps = over_http(live.url, prompts, hammer=mode == "http+tokenize")
            rows.append(row(wall, gaps, timer.durations))
            print(round_index, mode, {k: round(v, 1) for k, v in rows[-1].items()}, flush=True)
    live.stop()
    engine.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
