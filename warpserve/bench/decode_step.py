"""`warpserve bench decode-step`: one decode step, eager modules against the fused kernel.

For each weight format (fp32, int8, int4) and batch size, the same model, the same K/V
(every row at the same context length) and the same token ids go through the eager
modules (`model.forward` + `compute_logits`, the paged attention kernel) and through
`FusedDecoder`, alternating, `--repeats` times each; the minimum time of each counts
(least disturbed by other work on the machine). Reports ms per step, tokens/s and the
fused/eager speedup, plus the largest logit difference between the two. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quantizations", default="none,int8,int4")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--context", type=int, default=256, help="tokens already in the cache")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_results/decode_step.json")


def run(args: argparse.Namespace) -> int:
    import torch

    from warpserve.bench.report import environment
    from warpserve.config import CacheConfig, ModelConfig
    from warpserve.engine.setup import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = []
    for quantization in args.quantizations.split(","):
        loaded = load_model(
            ModelConfig(model=args.model, quantization=quantization), CacheConfig(memory_gib=0.1)
        )
        for batch in batch_sizes:
            row = _measure(loaded.model, batch, args, torch)
            row["quantization"] = quantization
            rows.append(row)
            print(
                f"{quantization:>5} B={batch:<3} eager {row['eager_ms']:.2f} ms  "
                f"fused {row['fused_ms']:.2f} ms  x{row['speedup']:.2f}  "
                f"max |dlogit| {row['max_abs_logit_diff']:.1e}",
                flush=True,
            )
    result = {
        "environment": environment(),
        "config": {k: getattr(args, k) for k in ("model", "context", "threads", "repeats", "seed")},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


def _measure(model, batch: int, args, torch) -> dict:
    from warpserve.execution.executor import ModelExecutor
    from warpserve.execution.inputs import Chunk, build_step_inputs

    block_size = 16
    blocks_per_seq = -(-(args.context + 1) // block_size)
    executor = ModelExecutor.build(model, batch * blocks_per_seq, block_size, "fused")
    fused = executor.fused
    if fused is None:
        raise RuntimeError("the fused decoder cannot run this model (see the log)")
    generator = torch.Generator().manual_seed(args.seed)
    for kv in executor.kv_caches:  # a filled cache: attention reads real-looking values
        kv.normal_(generator=generator)
    token_ids = torch.randint(0, model.config.vocab_size, (batch,), generator=generator)
    chunks = [
        Chunk(
            [int(token_ids[b])],
            args.context,
            range(b * blocks_per_seq, (b + 1) * blocks_per_seq),
            True,
        )
        for b in range(batch)
    ]
    inputs = build_step_inputs(chunks, block_size)

    @torch.inference_mode()
    def eager():
        return executor.run_eager(inputs)

    def fused_step():
        return fused(inputs)

    diff = float((eager() - fused_step()).abs().max())
    times: dict[str, list[float]] = {"eager": [], "fused": []}
    for _ in range(args.repeats):
        for name, fn in (("eager", eager), ("fused", fused_step)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    eager_s, fused_s = min(times["eager"]), min(times["fused"])
    return {
        "batch_size": batch,
        "eager_ms": eager_s * 1e3,
        "fused_ms": fused_s * 1e3,
        "eager_tokens_per_s": batch / eager_s,
        "fused_tokens_per_s": batch / fused_s,
        "speedup": eager_s / fused_s,
        "max_abs_logit_diff": diff,
    }
