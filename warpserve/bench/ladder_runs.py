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


def native_logits_fn(model: LlamaForCausalLM, block_size: int = 16):
    """The native paged model as a perplexity LogitsFn: each window is one prefill chunk
    into a K/V cache of its own, so the quantized linears run exactly as in the engine."""
    from warpserve.execution.memory import allocate_kv
    from warpserve.layers.attention import AttentionMetadata, PrefillChunk

    def logits_fn(input_ids: torch.Tensor) -> torch.Tensor:  # [1, T] -> [1, T, V]
        num_tokens = input_ids.shape[1]
        num_blocks = -(-num_tokens // block_size)
        kv_caches = allocate_kv(model, num_blocks, block_size)
        meta = AttentionMetadata(
            slot_mapping=torch.arange(num_tokens),
            num_decode_tokens=0,
            decode_block_tables=torch.empty(0, 1, dtype=torch.long),
            decode_context_lens=torch.empty(0, dtype=torch.long),
            prefills=[PrefillChunk(0, num_tokens, 0, torch.arange(num_blocks))],
        )
        hidden = model(input_ids[0], torch.arange(num_tokens), kv_caches, meta)
        return model.compute_logits(hidden)[None]

    return logits_fn


def model_logits_fn(model: nn.Module):
    """A LogitsFn for a loaded model: the native paged path, or the module itself."""
    from warpserve.models.hf_fallback import TransformersCausalLM
    from warpserve.models.llama import LlamaForCausalLM
    from warpserve.quant.perplexity import module_logits_fn

    if isinstance(model, TransformersCausalLM):
        return module_logits_fn(model.model)
    if isinstance(model, LlamaForCausalLM):
        return native_logits_fn(model)
    return module_logits_fn(model)
