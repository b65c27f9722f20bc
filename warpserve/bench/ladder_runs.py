"""The ladder's measurements: one workload through an engine, through Transformers
`generate`, and the perplexity of a model on fixed WikiText-2 windows.

Every runner returns a `RunResult` so that the rungs are compared on the same fields:
aggregate generated tokens/s (wall clock, prompt processing included), single-stream
decode tokens/s (tokens after the first over the time from the first to the last token,
so prompt processing is excluded) and TTFT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from warpserve.bench.report import percentiles

if TYPE_CHECKING:
    from warpserve.bench.hf_baseline import CausalLM
    from warpserve.models.llama import LlamaForCausalLM
    from warpserve.quant.perplexity import LogitsFn


@dataclass
class RunResult:
    num_requests: int
    concurrency: int  # requests in flight at once (1 = one stream)
    output_len: int  # new tokens per request
    generated_tokens: int
    elapsed_s: float  # wall clock of the whole workload
    ttft_s: dict[str, float]  # percentiles over requests
    decode_tokens_per_s: float | None  # single stream only: prompt processing excluded
    # CPU seconds of this process per wall second while it ran: close to the thread count
    # on an idle machine, lower when other processes took cores (or in serial sections).
    cores_used: float
    token_ids: list[list[int]] = field(default_factory=list, repr=False)  # per request

    @property
    def generated_tokens_per_s(self) -> float:
        return self.generated_tokens / self.elapsed_s

    def summary(self) -> dict[str, object]:
        return {
            "num_requests": self.num_requests,
            "concurrency": self.concurrency,
            "output_len": self.output_len,
            "generated_tokens": self.generated_tokens,
            "elapsed_s": self.elapsed_s,
            "generated_tokens_per_s": self.generated_tokens_per_s,
            "decode_tokens_per_s": self.decode_tokens_per_s,
            "ttft_s": self.ttft_s,
            "cores_used": self.cores_used,
        }


# -- warpserve --------------------------------------------------------------------------


def warm_up(engine) -> None:
    """One short request, so that first-call costs (allocations, kernels) are not timed."""
    from warpserve.request import SamplingParams

    engine.add_request("warmup", [1, 2, 3, 4, 5, 6], SamplingParams(max_tokens=4, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()


def run_engine(engine, prompts: list[list[int]], output_len: int, concurrency: int) -> RunResult:
    """Greedy, EOS ignored, at most `concurrency` requests in flight (refilled as they end)."""
    from warpserve.request import SamplingParams

    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
    prefix = f"ladder-{time.perf_counter_ns()}"
    submitted: dict[str, float] = {}
    token_times: dict[str, list[float]] = {}
    outputs: dict[str, list[int]] = {}
    pending = list(enumerate(prompts))
    started, cpu_started = time.perf_counter(), time.process_time()
    while pending or engine.has_unfinished_requests():
        while pending and len(submitted) - len(outputs) < concurrency:
            index, prompt = pending.pop(0)
            request_id = f"{prefix}-{index}"
            submitted[request_id] = time.perf_counter()
            engine.add_request(request_id, prompt, params)
        for out in engine.step():
            now = time.perf_counter()
            times = token_times.setdefault(out.request_id, [])
            times.extend([now] * (len(out.outputs[0].token_ids) - len(times)))
            if out.finished:
                outputs[out.request_id] = list(out.outputs[0].token_ids)
    elapsed = time.perf_counter() - started
    cores_used = (time.process_time() - cpu_started) / elapsed
    ids = list(submitted)
    ttft = [token_times[r][0] - submitted[r] for r in ids]
    return RunResult(
        num_requests=len(prompts),
        concurrency=concurrency,
        output_len=output_len,
        generated_tokens=sum(len(outputs[r]) for r in ids),
        elapsed_s=elapsed,
        ttft_s=percentiles(ttft),
        decode_tokens_per_s=_decode_rate([token_times[r] for r in ids])
        if concurrency == 1
        else None,
        cores_used=cores_used,
        token_ids=[outputs[r] for r in ids],
    )


def _decode_rate(token_times: list[list[float]]) -> float | None:
    """Tokens after the first, over the time from each request's first token to its last."""
    num_tokens = sum(len(t) - 1 for t in token_times)
    seconds = sum(t[-1] - t[0] for t in token_times if t)
    return num_tokens / seconds if seconds > 0 else None


# -- Transformers -----------------------------------------------------------------------


@torch.inference_mode()
def run_hf(hf: CausalLM, prompts: list[list[int]], output_len: int, use_cache: bool) -> RunResult:
    """One request at a time through `generate` (greedy, exactly `output_len` new tokens).

    TTFT is a separate 1-token generate per request; decode tokens/s is the remaining
    time of the full generate spread over its tokens after the first."""
    _generate(hf, prompts[0][:8], 2, use_cache)  # warm-up
    ttft: list[float] = []
    total_s, num_tokens, token_ids = 0.0, 0, []
    loop_started, cpu_started = time.perf_counter(), time.process_time()
    for prompt in prompts:
        started = time.perf_counter()
        _generate(hf, prompt, 1, use_cache)
        ttft.append(time.perf_counter() - started)
        started = time.perf_counter()
        out = _generate(hf, prompt, output_len, use_cache)
        total_s += time.perf_counter() - started
        token_ids.append(out)
        num_tokens += len(out)
    cores_used = (time.process_time() - cpu_started) / (time.perf_counter() - loop_started)
    decode_s = total_s - sum(ttft)
    return RunResult(
        num_requests=len(prompts),
        concurrency=1,
        output_len=output_len,
        generated_tokens=num_tokens,
        elapsed_s=total_s,
        ttft_s=percentiles(ttft),
        decode_tokens_per_s=(num_tokens - len(prompts)) / decode_s if decode_s > 0 else None,
        cores_used=cores_used,
        token_ids=token_ids,
    )


def _generate(hf: CausalLM, prompt: list[int], output_len: int, use_cache: bool) -> list[int]:
    ids = torch.tensor([prompt])
    pad = hf.config.pad_token_id if hf.config.pad_token_id is not None else 0
    out = hf.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=output_len,
        min_new_tokens=output_len,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=pad,
    )
    return out[0, len(prompt) :].tolist()


# -- perplexity -------------------------------------------------------------------------


def paged_logits_fn(
    model: LlamaForCausalLM, window_tokens: int, decode_backend: str, block_size: int = 16
) -> LogitsFn | None:
    """The native model as a perplexity LogitsFn, through the engine's executor.

    "eager": each window is one prefill chunk, so the quantized linears run exactly as in
    the engine. "fused": each window's tokens are decode rows of one fused call, row t
    attending to positions 0..t, so what the fused decode backend computes (its weight
    formats, its attention) is scored; None when the fused decoder cannot run the model.
    """
    from warpserve.execution.executor import ModelExecutor
    from warpserve.execution.inputs import Chunk

    num_blocks = -(-window_tokens // block_size)
    fused_max_tokens = window_tokens if decode_backend == "fused" else 0
    executor = ModelExecutor.build(
        model, num_blocks, block_size, decode_backend, quiet=True, fused_max_tokens=fused_max_tokens
    )
    if decode_backend == "fused" and executor.fused is None:
        return None
    block_ids = range(num_blocks)

    def logits_fn(input_ids: torch.Tensor) -> torch.Tensor:  # [1, T] -> [1, T, V]
        ids = input_ids[0].tolist()
        if len(ids) > window_tokens:
            raise ValueError(f"window of {len(ids)} tokens exceeds {window_tokens}")
        chunk = Chunk(ids, 0, block_ids, is_decode_rows=False, num_logits=len(ids))
        return executor.logits([chunk])[None]

    return logits_fn


def model_logits_fn(model: nn.Module, window_tokens: int) -> LogitsFn:
    """A LogitsFn for a loaded model: the native paged path (eager), or the module itself."""
    from warpserve.models.hf_fallback import TransformersCausalLM
    from warpserve.models.llama import LlamaForCausalLM
    from warpserve.quant.perplexity import module_logits_fn

    if isinstance(model, TransformersCausalLM):
        return module_logits_fn(model.model)
    if isinstance(model, LlamaForCausalLM):
        logits_fn = paged_logits_fn(model, window_tokens, "eager")
        assert logits_fn is not None  # only the fused backend can be unavailable
        return logits_fn
    return module_logits_fn(model)
