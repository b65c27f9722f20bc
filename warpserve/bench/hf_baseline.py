"""Plain Transformers `generate`: the baseline every speedup is measured against."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch

from warpserve.bench.report import percentiles
from warpserve.weights.registry import resolve_model_path

if TYPE_CHECKING:
    from transformers import GenerationMixin, PreTrainedModel

    class CausalLM(PreTrainedModel, GenerationMixin):
        """What AutoModelForCausalLM returns: a model with a config and generate()."""


def load_hf_model(model: str, dtype: str = "float32", use_cache: bool = True) -> CausalLM:
    """The model as a plain Transformers deployment loads it (GGUF via gguf_file=)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(model)
    kwargs = {"dtype": getattr(torch, dtype)}
    if path.suffix == ".gguf":
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kwargs)
    else:
        hf = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    hf.generation_config.use_cache = use_cache
    return hf.eval()


@torch.inference_mode()
def _generate(hf: CausalLM, batch: list[list[int]], output_len: int, use_cache: bool = True):
    pad = hf.config.pad_token_id if hf.config.pad_token_id is not None else 0
    width = max(len(p) for p in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, prompt in enumerate(batch):  # left padding, as decoder-only generate wants
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return hf.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=output_len,
        min_new_tokens=output_len,
        do_sample=False,
        use_cache=use_cache,
        pad_token_id=pad,
    )


def run_hf_batch1(
    hf: CausalLM, prompts: list[list[int]], output_len: int, use_cache: bool = True
) -> dict[str, object]:
    """One request at a time; TTFT measured with a separate 1-token generate per request."""
    _generate(hf, [prompts[0][:8]], 2, use_cache)  # warm-up
    ttft, total_s, num_tokens = [], 0.0, 0
    for prompt in prompts:
        started = time.perf_counter()
        _generate(hf, [prompt], 1, use_cache)
        ttft.append(time.perf_counter() - started)
        started = time.perf_counter()
        out = _generate(hf, [prompt], output_len, use_cache)
        total_s += time.perf_counter() - started
        num_tokens += out.shape[1] - len(prompt)
    return {
        "num_requests": len(prompts),
        "generated_tokens": num_tokens,
        "elapsed_s": total_s,
        "generated_tokens_per_s": num_tokens / total_s,
        "requests_per_s": len(prompts) / total_s,
        "ttft_s": percentiles(ttft),
        "itl_ms": {"p50": (total_s - sum(ttft)) / max(num_tokens - len(prompts), 1) * 1000},
    }


def run_hf_batched(
    hf: CausalLM, prompts: list[list[int]], output_len: int, batch_sizes: list[int]
) -> dict[str, Any]:
    """Padded static batches in arrival order; the best batch size is the baseline."""
    runs = []
    for batch_size in batch_sizes:
        started = time.perf_counter()
        num_tokens = 0
        for i in range(0, len(prompts), batch_size):
            batch = prompts[i : i + batch_size]
            out = _generate(hf, batch, output_len)
            num_tokens += (out.shape[1] - max(len(p) for p in batch)) * len(batch)
        elapsed = time.perf_counter() - started
        runs.append(
            {
                "batch_size": batch_size,
                "num_requests": len(prompts),
                "generated_tokens": num_tokens,
                "elapsed_s": elapsed,
                "generated_tokens_per_s": num_tokens / elapsed,
                "requests_per_s": len(prompts) / elapsed,
            }
        )
    best = max(runs, key=lambda r: r["generated_tokens_per_s"])
    return {"runs": runs, "best": best}
