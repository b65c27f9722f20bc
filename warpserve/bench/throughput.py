"""`warpserve bench throughput`: the offline engine against Transformers `generate`.

One run, one seeded workload: N requests with prompt lengths uniform in a stated range
(token slices of WikiText-2) and a fixed number of new tokens each (EOS ignored, so every
system generates exactly the same number of tokens). Measured in the same process:
warpserve (all requests submitted at once), Transformers generate with KV cache at batch
1, and Transformers generate batched with left padding at its best batch size. A second
workload puts a shared system prompt in front of every request and runs warpserve with
prefix caching on and off, reporting peak KV blocks and throughput for both.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from warpserve.config import add_engine_arguments

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--num-requests", type=int, default=64)
    parser.add_argument("--prompt-len", default="100:400", help="LOW:HIGH tokens, uniform")
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text", default=None, help="prompt source text (default WikiText-2)")
    # --num-threads (alias --threads) sets torch's threads for every system; --block-size:
    # a shared prefix's last partial block is not shared, so smaller blocks share more.
    add_engine_arguments(parser)
    parser.set_defaults(max_num_batched_tokens=512)
    parser.add_argument("--shared-prefix-len", type=int, default=300)
    parser.add_argument("--shared-suffix-len", default="1:100", help="per-request tokens after it")
    parser.add_argument("--hf-batch1-requests", type=int, default=4)
    parser.add_argument("--hf-batched-requests", type=int, default=32)
    parser.add_argument("--hf-batch-sizes", default="8,16,32")
    parser.add_argument("--skip-hf", action="store_true")
    parser.add_argument("--out", default="bench_results/throughput.json")


def run(args: argparse.Namespace) -> int:
    import torch

    from warpserve.bench import datasets, report
    from warpserve.bench.engine_runner import run_engine_workload
    from warpserve.bench.hf_baseline import load_hf_model, run_hf_batch1, run_hf_batched
    from warpserve.config import engine_config_from_args
    from warpserve.engine.setup import load_model

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    lo, hi = datasets.parse_range(args.prompt_len)
    config = engine_config_from_args(args, seed=args.seed)
    loaded = load_model(config.model, config.cache)
    corpus = datasets.corpus_token_ids(loaded.tokenizer, datasets.find_text(args.text))
    lengths = datasets.sample_lengths(lo, hi, args.num_requests, args.seed)
    prompts = datasets.sample_prompts(corpus, lengths, args.seed)
    results: dict[str, Any] = {"environment": report.environment(), "config": vars(args)}
    results["workload"] = {
        "num_requests": len(prompts),
        "prompt_len_range": [lo, hi],
        "mean_prompt_len": sum(lengths) / len(lengths),
        "output_len": args.output_len,
    }
    results["warpserve"] = run_engine_workload(loaded, config, prompts, args.output_len)
    _log("warpserve", results["warpserve"])
    results["shared_prefix"] = _shared_prefix(args, loaded, config, corpus)
    if not args.skip_hf:
        hf = load_hf_model(args.model, args.dtype)
        results["hf_batch1"] = run_hf_batch1(
            hf, prompts[: args.hf_batch1_requests], args.output_len
        )
        _log("transformers batch 1", results["hf_batch1"])
        sizes = [int(s) for s in args.hf_batch_sizes.split(",")]
        batched = run_hf_batched(hf, prompts[: args.hf_batched_requests], args.output_len, sizes)
        results["hf_batched"] = batched
        _log("transformers batched (best)", batched["best"])
        results["ratios"] = _ratios(results)
        logger.info("ratios: %s", results["ratios"])
    path = report.write_json(args.out, results)
    print(_summary(results))
    print(f"wrote {path}")
    return 0


def _shared_prefix(args, loaded, config, corpus) -> dict[str, Any]:
    from dataclasses import replace

    from warpserve.bench import datasets
    from warpserve.bench.engine_runner import run_engine_workload

    lo, hi = datasets.parse_range(args.shared_suffix_len)
    system = datasets.sample_prompts(corpus, [args.shared_prefix_len], args.seed + 1)[0]
    suffixes = datasets.sample_prompts(
        corpus, datasets.sample_lengths(lo, hi, args.num_requests, args.seed + 2), args.seed + 3
    )
    prompts = [system + s for s in suffixes]
    out: dict[str, Any] = {"prefix_len": len(system), "suffix_len_range": [lo, hi]}
    for enabled in (True, False):
        cfg = replace(config, cache=replace(config.cache, enable_prefix_caching=enabled))
        key = "caching_on" if enabled else "caching_off"
        out[key] = run_engine_workload(loaded, cfg, prompts, args.output_len)
        _log(f"shared prefix, {key}", out[key])
    on, off = out["caching_on"], out["caching_off"]
    out["peak_blocks_ratio"] = on["peak_kv_blocks"] / off["peak_kv_blocks"]
    out["throughput_ratio"] = on["generated_tokens_per_s"] / off["generated_tokens_per_s"]
    return out


def _ratios(results: dict) -> dict[str, float]:
    ours = results["warpserve"]["generated_tokens_per_s"]
    return {
        "vs_hf_batch1": ours / results["hf_batch1"]["generated_tokens_per_s"],
        "vs_hf_batched_best": ours / results["hf_batched"]["best"]["generated_tokens_per_s"],
    }


def _log(name: str, result: dict) -> None:
    logger.info("%s: %.1f generated tokens/s", name, result["generated_tokens_per_s"])


def _summary(results: dict) -> str:
    lines = ["| system | generated tok/s | req/s | TTFT p50 / p99 (s) | ITL p50 / p99 (ms) |"]
    lines.append("|---|---|---|---|---|")
    rows = [("warpserve", results["warpserve"])]
    if "hf_batch1" in results:
        rows.append(("transformers batch 1", results["hf_batch1"]))
        best = results["hf_batched"]["best"]
        rows.append((f"transformers batched (bs {best['batch_size']})", best))
    for name, r in rows:
        ttft, itl = r.get("ttft_s", {}), r.get("itl_ms", {})
        lines.append(
            f"| {name} | {r['generated_tokens_per_s']:.1f} | {r['requests_per_s']:.2f} | "
            f"{ttft.get('p50', float('nan')):.2f} / {ttft.get('p99', float('nan')):.2f} | "
            f"{itl.get('p50', float('nan')):.1f} / {itl.get('p99', float('nan')):.1f} |"
        )
    if "ratios" in results:
        lines.append(f"ratios: {results['ratios']}")
    shared = results["shared_prefix"]
    lines.append(
        f"shared {shared['prefix_len']}-token prefix: peak KV blocks "
        f"{shared['caching_on']['peak_kv_blocks']} (caching on) vs "
        f"{shared['caching_off']['peak_kv_blocks']} (off) = {shared['peak_blocks_ratio']:.3f}; "
        f"throughput ratio on/off {shared['throughput_ratio']:.2f}"
    )
    return "\n".join(lines)
