"""Run a fixed workload through a fresh LLMEngine and time every token."""

from __future__ import annotations

import time

from warpserve.bench.report import percentiles
from warpserve.config import EngineConfig
from warpserve.engine.llm_engine import LLMEngine
from warpserve.engine.setup import LoadedModel
from warpserve.request import SamplingParams


def run_engine_workload(
    loaded: LoadedModel, config: EngineConfig, prompts: list[list[int]], output_len: int
) -> dict[str, object]:
    engine = LLMEngine(loaded, config)
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
    _warm_up(engine)
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        engine.add_request(f"bench-{i}", prompt, params)
    token_times: dict[str, list[float]] = {}
    peak_blocks = 0
    while engine.has_unfinished_requests():
        outputs = engine.step()
        now = time.perf_counter()
        stats = engine.stats()
        peak_blocks = max(peak_blocks, stats.num_total_blocks - stats.num_free_blocks)
        for out in outputs:
            times = token_times.setdefault(out.request_id, [])
            times.extend([now] * (len(out.outputs[0].token_ids) - len(times)))
    elapsed = time.perf_counter() - started
    return _summarize(token_times, started, elapsed, peak_blocks, engine)


def _warm_up(engine: LLMEngine) -> None:
    """One short request so that first-call costs (allocations, kernels) are not timed."""
    engine.add_request("warmup", [1, 2, 3, 4], SamplingParams(max_tokens=2, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()


def _summarize(token_times, started, elapsed, peak_blocks, engine) -> dict[str, object]:
    num_tokens = sum(len(t) for t in token_times.values())
    ttft = [t[0] - started for t in token_times.values() if t]
    itl = [(b - a) * 1000 for t in token_times.values() for a, b in zip(t, t[1:], strict=False)]
    stats = engine.stats()
    return {
        "elapsed_s": elapsed,
        "generated_tokens": num_tokens,
        "generated_tokens_per_s": num_tokens / elapsed,
        "requests_per_s": len(token_times) / elapsed,
        "ttft_s": percentiles(ttft),
        "itl_ms": percentiles(itl),
        "peak_kv_blocks": peak_blocks,
        "prefix_cache_hit_rate": stats.prefix_cache_hits / max(stats.prefix_cache_queries, 1),
        "num_preemptions": stats.num_preemptions,
    }
