"""`warpserve bench spec`: speculative decoding against plain decoding, side by side.

One process, one loaded target, one engine per method (none, ngram, auto, draft,
layerskip), greedy, fixed max_tokens. Workloads:
  - grounded: input-grounded chat requests (rewrite, extract or continue a WikiText-2
    passage; edit a code snippet), one at a time (single stream);
  - chat: open-ended chat requests, one at a time;
  - the same two sets with `--concurrency` requests in flight at once.
Runs are interleaved (each prompt batch runs under every method, in a rotating order,
before the next), so a busy machine slows every method alike; with `--repeats R` each
batch runs R times per method and the fastest run counts (prefix caching is off). Reported per workload and method:
generated tokens/s, the ratio to "none", whether the greedy tokens are identical to
"none", and per proposer the acceptance rate (accepted / proposed draft tokens) and the
mean accepted length (accepted draft tokens per verified proposal).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

METHODS = ("none", "ngram", "auto", "draft", "layerskip")

GROUNDED_TASKS = (
    ("rewrite", "Rewrite the following passage, keeping its meaning:\n\n{passage}"),
    ("extract", "Extract the sentences of this passage that contain a number:\n\n{passage}"),
    ("continue", "Continue the following passage:\n\n{passage}"),
    (
        "code",
        "In this Python code, rename the function `{old}` to `{new}` everywhere and "
        "return the complete code:\n\n```python\n{code}```",
    ),
)

CODE_SNIPPETS = (
    (
        "mean",
        "average",
        "def mean(values):\n    total = 0\n    for value in values:\n        total += value\n"
        "    return total / len(values)\n\n\ndef variance(values):\n    m = mean(values)\n"
        "    total = 0\n    for value in values:\n        total += (value - m) ** 2\n"
        "    return total / len(values)\n\n\ndef spread(values):\n"
        "    return max(values) - mean(values)\n",
    ),
    (
        "load_rows",
        "read_rows",
        "import csv\n\n\ndef load_rows(path):\n    with open(path) as handle:\n"
        "        return list(csv.DictReader(handle))\n\n\ndef total_price(path):\n"
        "    rows = load_rows(path)\n    return sum(float(row['price']) for row in rows)\n\n\n"
        "def names(path):\n    return [row['name'] for row in load_rows(path)]\n",
    ),
)

CHAT_PROMPTS = (
    "What are three good habits for staying healthy?",
    "Write a short poem about the sea at night.",
    "Explain how a rainbow forms, in simple words.",
    "Give me some tips for learning a new language.",
    "What is the difference between weather and climate?",
    "Suggest a plan for a relaxing weekend at home.",
    "Why do cats purr?",
    "Describe your ideal city to live in.",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--num-grounded", type=int, default=4, help="single-stream prompts")
    parser.add_argument("--num-chat", type=int, default=4, help="single-stream prompts")
    parser.add_argument("--concurrency", type=int, default=8, help="0 skips the batched runs")
    parser.add_argument("--num-speculative-tokens", type=int, default=8)
    parser.add_argument("--ngram-min", type=int, default=2)
    parser.add_argument("--ngram-max", type=int, default=5)
    parser.add_argument("--draft-model", default=None, help="default: the target itself")
    parser.add_argument("--draft-quantization", default="int4", help="int8 | int4 | none")
    parser.add_argument("--layer-skip-depth", type=int, default=20)
    parser.add_argument("--kv-cache-gib", type=float, default=0.25, help="per engine")
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text", default=None, help="passage source (default WikiText-2)")
    parser.add_argument("--max-passage-chars", type=int, default=900)
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per batch and method; the fastest counts"
    )
    parser.add_argument("--out", default="bench_results/spec.json")


def run(args: argparse.Namespace) -> int:
    from warpserve.bench import datasets, report
    from warpserve.engine.setup import load_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "none" not in methods:
        methods.insert(0, "none")
    base = _engine_config(args, "none")
    loaded = load_model(base.model, base.cache)
    engines = {m: _engine(loaded, _engine_config(args, m)) for m in methods}
    tokenizer = loaded.tokenizer
    passages = _passages(datasets.find_text(args.text), args.seed)
    passages = [p[: args.max_passage_chars] for p in passages]
    grounded = _grounded_prompts(passages, max(args.num_grounded, args.concurrency), args.seed)
    chat = [(f"chat-{i}", text) for i, text in enumerate(CHAT_PROMPTS)]
    chat = (chat * (1 + args.concurrency // len(chat)))[: max(args.num_chat, args.concurrency)]
    encode = _encoder(tokenizer)
    results: dict[str, Any] = {"environment": report.environment(), "config": vars(args)}
    workloads = {
        "grounded_single": ([encode(t) for _, t in grounded[: args.num_grounded]], 1),
        "chat_single": ([encode(t) for _, t in chat[: args.num_chat]], 1),
    }
    if args.concurrency:
        c = args.concurrency
        workloads[f"grounded_x{c}"] = ([encode(t) for _, t in grounded[:c]], c)
        workloads[f"chat_x{c}"] = ([encode(t) for _, t in chat[:c]], c)
    results["start_up_step_cost"] = {
        m: dataclasses.asdict(e.runner.speculator.policy.step_cost.prior)
        for m, e in engines.items()
        if m != "none"
    }
    results["prompts"] = {"grounded": [n for n, _ in grounded], "chat": [n for n, _ in chat]}
    results["workloads"] = {}
    for name, (prompts, width) in workloads.items():
        logger.info("workload %s: %d prompts, %d at a time", name, len(prompts), width)
        results["workloads"][name] = _run_workload(
            engines, prompts, width, args.max_tokens, args.repeats
        )
    path = report.write_json(args.out, results)
    print(summary_table(results["workloads"]))
    print(f"wrote {path}")
    return 0


# -- configuration --------------------------------------------------------------------


def _engine_config(args: argparse.Namespace, method: str):
    from warpserve.config import CacheConfig, EngineConfig, ModelConfig, SpeculativeConfig

    quantization = None if args.draft_quantization == "none" else args.draft_quantization
    spec = SpeculativeConfig(
        method=method,
        num_speculative_tokens=args.num_speculative_tokens,
        ngram_min=args.ngram_min,
        ngram_max=args.ngram_max,
        draft_model=(args.draft_model or args.model) if method == "draft" else None,
        draft_quantization=quantization if method == "draft" else None,
        layer_skip_depth=args.layer_skip_depth,
    )
    return EngineConfig(
        model=ModelConfig(model=args.model, num_threads=args.num_threads),
        # Off, so that a repeated prompt costs its prefill again in every run.
        cache=CacheConfig(memory_gib=args.kv_cache_gib, enable_prefix_caching=False),
        speculative=spec,
        seed=args.seed,
    )


def _engine(loaded, config):
    from warpserve.engine.llm_engine import LLMEngine
    from warpserve.request import SamplingParams

    engine = LLMEngine(loaded, config)
    # A short request that shares no prefix with the workloads: first-call costs untimed.
    engine.add_request("warmup", [1, 2, 3, 4, 5, 6], SamplingParams(max_tokens=8, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()
    return engine


# -- prompts ----------------------------------------------------------------------------


def _passages(path, seed: int, count: int = 64) -> list[str]:
    """Cleaned paragraphs of 400-900 characters (WikiText's tokenized spacing undone)."""
    text = path.read_text(encoding="utf-8")
    paragraphs = [_clean(p) for p in text.split("\n") if not p.strip().startswith("=")]
    paragraphs = [p for p in paragraphs if 400 <= len(p) <= 900]
    return random.Random(seed).sample(paragraphs, min(count, len(paragraphs)))


def _clean(text: str) -> str:
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    text = text.replace("<unk>", "something")
    text = re.sub(r" ([,.;:)'])", r"\1", text)
    return re.sub(r"\( ", "(", text).strip()


def _grounded_prompts(passages: list[str], count: int, seed: int) -> list[tuple[str, str]]:
    prompts = []
    for i in range(count):
        name, template = GROUNDED_TASKS[i % len(GROUNDED_TASKS)]
        old, new, code = CODE_SNIPPETS[(i // len(GROUNDED_TASKS)) % len(CODE_SNIPPETS)]
        text = template.format(passage=passages[i], old=old, new=new, code=code)
        prompts.append((f"{name}-{i}", text))
    return prompts


def _encoder(tokenizer):
    def encode(content: str) -> list[int]:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": content}])
        return tokenizer.encode(rendered, add_special_tokens=False)

    return encode


# -- running ----------------------------------------------------------------------------


@dataclass
class _Tally:
    seconds: float = 0.0  # per batch, the best of the repeats
    num_tokens: int = 0
    token_ids: list[list[int]] = field(default_factory=list)
    num_drafts: int = 0  # counters over every repeat
    num_draft_tokens: int = 0
    num_accepted: int = 0
    batch_tokens_per_s: list[float] = field(default_factory=list)  # per batch, best repeat
    decode_tokens: int = 0  # tokens after each request's first, from the best repeat
    decode_seconds: float = 0.0  # first token -> finish, summed over requests, best repeat


def _run_workload(
    engines: dict, prompts: list[list[int]], width: int, max_tokens: int, repeats: int
) -> dict[str, dict]:
    tallies = {method: _Tally() for method in engines}
    batches = [prompts[i : i + width] for i in range(0, len(prompts), width)]
    for index, batch in enumerate(batches):
        best: dict[str, tuple[float, int, float]] = {}  # (seconds, decode tokens, decode s)
        for repeat in range(repeats):
            methods = list(engines)
            # Rotate the order so that no method always runs first after a prompt change.
            shift = (index + repeat) % len(methods)
            for method in methods[shift:] + methods[:shift]:
                run = _run_batch(engines[method], batch, max_tokens, tallies[method], repeat)
                best[method] = min(best.get(method, run), run)
        for method, tally in tallies.items():
            tally.seconds += best[method][0]
            tally.decode_tokens += best[method][1]
            tally.decode_seconds += best[method][2]
            tally.batch_tokens_per_s.append(
                sum(map(len, tally.token_ids[-len(batch) :])) / best[method][0]
            )
            logger.info("  batch %d %s: %.1f tok/s", index, method, tally.batch_tokens_per_s[-1])
    return {m: _result(t, tallies["none"], width) for m, t in tallies.items()}


def _run_batch(
    engine, batch: list[list[int]], max_tokens: int, tally: _Tally, repeat: int
) -> tuple[float, int, float]:
    """Seconds to finish the batch, tokens after each request's first and the seconds from
    each request's first token to its finish (summed); the first repeat's tokens go into
    the tally."""
    from warpserve.request import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    before = engine.stats()
    ids = [f"bench-{time.perf_counter_ns()}-{i}" for i in range(len(batch))]
    outputs: dict[str, list[int]] = {}
    decode_tokens, decode_seconds = 0, 0.0
    started = time.perf_counter()
    for request_id, prompt in zip(ids, batch, strict=True):
        engine.add_request(request_id, prompt, params)
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                outputs[out.request_id] = out.outputs[0].token_ids
                decode_tokens += len(out.outputs[0].token_ids) - 1
                decode_seconds += out.metrics.decode_time or 0.0
    elapsed = time.perf_counter() - started
    after = engine.stats()
    if repeat == 0:
        tally.token_ids.extend(outputs[i] for i in ids)
        tally.num_tokens += sum(len(outputs[i]) for i in ids)
    tally.num_drafts += after.spec_decode_num_drafts - before.spec_decode_num_drafts
    tally.num_draft_tokens += (
        after.spec_decode_num_draft_tokens - before.spec_decode_num_draft_tokens
    )
    tally.num_accepted += (
        after.spec_decode_num_accepted_tokens - before.spec_decode_num_accepted_tokens
    )
    return elapsed, decode_tokens, decode_seconds


def _result(tally: _Tally, baseline: _Tally, width: int) -> dict[str, object]:
    tokens_per_s = tally.num_tokens / tally.seconds
    baseline_per_s = baseline.num_tokens / baseline.seconds
    decode_per_s = decode_speedup = None
    if width == 1 and tally.decode_seconds and baseline.decode_seconds:
        decode_per_s = tally.decode_tokens / tally.decode_seconds
        decode_speedup = decode_per_s / (baseline.decode_tokens / baseline.decode_seconds)
    return {
        "seconds": tally.seconds,
        "batch_tokens_per_s": tally.batch_tokens_per_s,
        "generated_tokens": tally.num_tokens,
        "tokens_per_s": tokens_per_s,
        "speedup": tokens_per_s / baseline_per_s,
        "decode_tokens_per_s": decode_per_s,
        "decode_speedup": decode_speedup,
        "identical_to_none": tally.token_ids == baseline.token_ids,
        "num_drafts": tally.num_drafts,
        "num_draft_tokens": tally.num_draft_tokens,
        "num_accepted_tokens": tally.num_accepted,
        "acceptance_rate": tally.num_accepted / tally.num_draft_tokens
        if tally.num_draft_tokens
        else None,
        "mean_accepted_length": tally.num_accepted / tally.num_drafts if tally.num_drafts else None,
    }


def summary_table(workloads: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| workload | method | tok/s | vs none | decode tok/s | vs none | identical | acceptance "
        "| mean accepted len |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, by_method in workloads.items():
        for method, r in by_method.items():
            rate, length = r["acceptance_rate"], r["mean_accepted_length"]
            decode, decode_speedup = r["decode_tokens_per_s"], r["decode_speedup"]
            lines.append(
                f"| {workload} | {method} | {r['tokens_per_s']:.1f} | {r['speedup']:.2f}x | "
                f"{'-' if decode is None else f'{decode:.1f}'} | "
                f"{'-' if decode_speedup is None else f'{decode_speedup:.2f}x'} | "
                f"{'yes' if r['identical_to_none'] else 'NO'} | "
                f"{'-' if rate is None else f'{rate:.0%}'} | "
                f"{'-' if length is None else f'{length:.2f}'} |"
            )
    return "\n".join(lines)
