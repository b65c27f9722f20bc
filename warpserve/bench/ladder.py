"""`warpserve bench ladder`: the optimization ladder, from naive Transformers to the fully
optimized engine, in one run on the same seeded prompts (greedy, EOS ignored).

Rungs (each adds one thing to the one before):
  0  Transformers generate without KV cache, batch 1 (fewer requests and tokens: it is
     slow; its rates are per token)
  1  Transformers generate with KV cache, batch 1
  2  warpserve, eager fp32, one stream
  3  + continuous batching: `--concurrency` requests in flight
  4  + quantization: int8 and int4 both measured, the faster one within its perplexity
     budget (quant.perplexity.BUDGETS) is kept
  5  + decode_backend="fused" (the config is passed through; the row says what ran)
  6  + speculative decoding: ngram and auto both measured, the faster one whose greedy
     tokens equal rung 5's is kept
plus llama.cpp on the same GGUF (the `bench` extra): its best of Q4_0/Q4_1/Q8_0 at one
sequence and at `--concurrency` sequences. Per rung: aggregate generated tokens/s, single-
stream decode tokens/s (prompt processing excluded), TTFT p50, speedups over rung 0 and
over the previous rung, and the perplexity change against fp32 on fixed WikiText-2 windows.
Writes JSON, Markdown and (with matplotlib) a PNG chart next to each other.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)

ALL_RUNGS = (0, 1, 2, 3, 4, 5, 6)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=2, help="for every system")
    parser.add_argument("--num-requests", type=int, default=32, help="the concurrent workload")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--output-len", type=int, default=128, help="new tokens per request")
    parser.add_argument(
        "--single-stream-requests", type=int, default=4, help="first N prompts, one at a time"
    )
    parser.add_argument("--naive-requests", type=int, default=2, help="rung 0's requests")
    parser.add_argument(
        "--naive-output-len",
        type=int,
        default=None,
        help="rung 0's new tokens (default --output-len; fewer favour rung 0: without a KV "
        "cache each token recomputes the whole sequence, so short outputs run faster per token)",
    )
    parser.add_argument(
        "--prompts",
        choices=("grounded", "wikitext"),
        default="grounded",
        help="grounded: chat requests to rewrite/extract/continue a WikiText-2 passage or "
        "edit code; wikitext: raw token slices of --prompt-len",
    )
    parser.add_argument("--prompt-len", default="100:300", help="LOW:HIGH tokens (wikitext)")
    parser.add_argument("--text", default=None, help="prompt source (default WikiText-2)")
    parser.add_argument("--rungs", default=",".join(map(str, ALL_RUNGS)), help="e.g. 0,2,3")
    parser.add_argument("--quantizations", default="int8,int4", help="rung 4's candidates")
    parser.add_argument("--spec-methods", default="ngram,auto", help="rung 6's candidates")
    parser.add_argument("--num-speculative-tokens", type=int, default=5)
    parser.add_argument("--ppl-windows", type=int, default=8)
    parser.add_argument("--ppl-window-tokens", type=int, default=512)
    parser.add_argument("--ppl-max-chars", type=int, default=400_000)
    parser.add_argument("--ppl-text", default=None, help="default WikiText-2 validation")
    parser.add_argument("--skip-llamacpp", action="store_true")
    parser.add_argument("--llamacpp-types", default="Q4_0,Q4_1,Q8_0")
    parser.add_argument("--kv-cache-gib", type=float, default=1.0)
    parser.add_argument("--max-num-batched-tokens", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_results/ladder.json", help="also .md and .png")


def run(args: argparse.Namespace) -> int:
    from warpserve.bench import ladder_report
    from warpserve.bench.ladder_rungs import BASE_RUNGS, Ladder
    from warpserve.bench.ladder_top import TOP_RUNGS

    if args.naive_output_len is None:
        args.naive_output_len = args.output_len
    rungs = parse_rungs(args.rungs)
    measure_rung = {**BASE_RUNGS, **TOP_RUNGS}
    ladder = Ladder.start(args)
    for rung in rungs:
        ladder.run_rung(rung, measure_rung[rung])
    ladder.close()
    llamacpp = None if args.skip_llamacpp else run_llamacpp(ladder)
    results = ladder_report.assemble(ladder, llamacpp)
    paths = ladder_report.write_all(args.out, results)
    print(ladder_report.markdown(results))
    print("wrote " + ", ".join(map(str, paths)))
    return 0


def parse_rungs(text: str) -> list[int]:
    rungs = sorted({int(part) for part in text.split(",") if part.strip()})
    unknown = [r for r in rungs if r not in ALL_RUNGS]
    if unknown or not rungs:
        raise ValueError(f"--rungs takes numbers from {ALL_RUNGS}, e.g. 0,2,3; got '{text}'")
    return rungs


def run_llamacpp(ladder) -> dict[str, object]:
    """llama.cpp's numbers per quantization type, or why they were skipped."""
    from warpserve.bench import llamacpp
    from warpserve.weights.registry import resolve_model_path

    reason = llamacpp.unavailable_reason()
    path = resolve_model_path(ladder.args.model)
    if reason is None and path.suffix != ".gguf":
        reason = f"the model {path} is not a GGUF file"
    if reason is not None:
        logger.warning("llama.cpp rows skipped: %s", reason)
        return {"skipped": reason}
    args = ladder.args
    types = [t.strip() for t in args.llamacpp_types.split(",") if t.strip()]
    per_type = llamacpp.measure(
        path,
        ladder.single_prompts,
        ladder.prompts[: args.concurrency],
        args.output_len,
        args.threads,
        types=types,
        ppl_windows=ladder.ppl_windows(),
    )
    return {"gguf": str(path), "per_type": per_type}
