"""`warpserve bench serve`: latency and throughput of an OpenAI-compatible server under load.

Runs one level per concurrency (or Poisson rate), each with the same seeded prompts, and
reports throughput, TTFT, inter-token latency and end-to-end latency at p50/p90/p99 and the
errors by kind; writes JSON (with the environment) and a PNG of latency against load.
Prompt lengths are in words of WikiText-2 (about one token each); the token counts in the
report are the server's own (`usage`), when it sends them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from collections import Counter
from pathlib import Path

from warpserve.bench.datasets import find_text, parse_range
from warpserve.bench.load import (
    RequestResult,
    RequestSpec,
    Target,
    first_model,
    run_concurrency,
    run_rate,
)
from warpserve.bench.report import environment, percentiles, write_json

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server root")
    parser.add_argument("--model", default=None, help="default: the first of GET /v1/models")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--concurrency", default="1,2,4", help="comma-separated client counts")
    load.add_argument("--rate", default=None, help="comma-separated Poisson rates (req/s)")
    parser.add_argument("--num-requests", type=int, default=32, help="per load level")
    parser.add_argument("--input-len", default="64:256", help="prompt words, LOW:HIGH uniform")
    parser.add_argument("--output-len", default="32:128", help="max_tokens, LOW:HIGH uniform")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--no-stream", action="store_true", help="whole responses: no ITL")
    parser.add_argument(
        "--no-ignore-eos", action="store_true", help="do not send ignore_eos (strict servers)"
    )
    parser.add_argument(
        "--logit-bias",
        default=None,
        help="TOKEN_ID:BIAS[,...] sent as logit_bias, e.g. the EOS id:-100 for servers "
        "without ignore_eos (llama-cpp-python)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="requests sent before measuring, as many at once as the highest concurrency",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--text", default=None, help="prompt corpus (default: WikiText-2)")
    parser.add_argument("--output", default="bench-serve.json", help="JSON report path")
    parser.add_argument("--plot", default=None, help="PNG path (default: next to the JSON)")


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    specs = make_specs(args)
    model = args.model or asyncio.run(first_model(args.url, args.api_key))
    target = Target(
        url=args.url.rstrip("/"),
        model=model,
        endpoint=args.endpoint,
        stream=not args.no_stream,
        ignore_eos=not args.no_ignore_eos,
        temperature=args.temperature,
        api_key=args.api_key,
        timeout_s=args.timeout,
        logit_bias=_logit_bias(args.logit_bias),
    )
    mode, levels = (
        ("rate", _floats(args.rate)) if args.rate else ("concurrency", _ints(args.concurrency))
    )
    if args.warmup:
        # at the highest load, so that batch shapes and cache memory the run will use have
        # been used once on every server alike (a cold first level measured ~1.5x slower)
        warm = int(max(levels)) if mode == "concurrency" else 1
        asyncio.run(run_concurrency(target, specs[: args.warmup], min(warm, args.warmup)))
    results = []
    for level in levels:
        summary = asyncio.run(_run_level(target, specs, mode, level, args.seed))
        logger.info("%s", _one_line(summary))
        results.append(summary)
    report = {
        "benchmark": "serve",
        "target": {"url": target.url, "model": model, "endpoint": target.endpoint},
        "config": {k: v for k, v in vars(args).items() if k not in ("api_key", "func")},
        "mode": mode,
        "levels": results,
        "environment": environment(),
    }
    out = write_json(args.output, report)
    plot = plot_latency(report, Path(args.plot) if args.plot else out.with_suffix(".png"))
    print(f"wrote {out} and {plot}")
    return 0 if all(r["num_ok"] for r in results) else 1


def make_specs(args: argparse.Namespace) -> list[RequestSpec]:
    """Seeded prompts: word slices of the corpus at random offsets, lengths uniform."""
    words = _corpus_words(args.text)
    rng = random.Random(args.seed)
    in_lo, in_hi = parse_range(args.input_len)
    out_lo, out_hi = parse_range(args.output_len)
    specs = []
    for _ in range(args.num_requests):
        length = rng.randint(in_lo, in_hi)
        start = rng.randrange(0, max(1, len(words) - length))
        prompt = " ".join(words[start : start + length])
        specs.append(RequestSpec(prompt=prompt, max_tokens=rng.randint(out_lo, out_hi)))
    return specs


def _corpus_words(path: str | None) -> list[str]:
    try:
        words = find_text(path).read_text(encoding="utf-8")[:2_000_000].split()
    except FileNotFoundError:
        if path:
            raise
        words = []
    if len(words) < 1000:  # no corpus: a seeded synthetic vocabulary
        rng = random.Random(1234)
        vocab = [
            "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 8)))
            for _ in range(2000)
        ]
        words = [rng.choice(vocab) for _ in range(100_000)]
    return words


async def _run_level(
    target: Target, specs: list[RequestSpec], mode: str, level: float, seed: int
) -> dict[str, object]:
    started = time.perf_counter()
    if mode == "rate":
        results = await run_rate(target, specs, level, seed)
    else:
        results = await run_concurrency(target, specs, int(level))
    return summarize(results, time.perf_counter() - started, mode, level)


def summarize(
    results: list[RequestResult], duration_s: float, mode: str, level: float
) -> dict[str, object]:
    ok = [r for r in results if r.ok]
    output_tokens = sum(r.output_tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in ok)
    return {
        mode: level,
        "duration_s": duration_s,
        "num_requests": len(results),
        "num_ok": len(ok),
        "errors": dict(Counter(r.error for r in results if r.error)),
        "request_throughput": len(ok) / duration_s,
        "output_token_throughput": output_tokens / duration_s,
        "total_token_throughput": (output_tokens + prompt_tokens) / duration_s,
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
        "ttft_s": percentiles([r.ttft_s for r in ok if r.ttft_s is not None]),
        "itl_s": percentiles([gap for r in ok for gap in r.itl_s]),
        "e2e_s": percentiles([r.e2e_s for r in ok]),
    }


def plot_latency(report: dict, path: Path) -> Path:
    """TTFT, inter-token and end-to-end latency (p50/p90/p99) against the load level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mode, levels = report["mode"], report["levels"]
    xs = [level[mode] for level in levels]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [("ttft_s", "time to first token"), ("itl_s", "inter-token"), ("e2e_s", "end to end")]
    for ax, (key, title) in zip(axes, panels, strict=True):
        for point in ("p50", "p90", "p99"):
            ax.plot(xs, [level[key][point] for level in levels], marker="o", label=point)
        ax.set_title(f"{title} latency")
        ax.set_xlabel("concurrent clients" if mode == "concurrency" else "offered rate (req/s)")
        ax.set_ylabel("seconds")
        ax.grid(alpha=0.3)
        ax.legend()
    target = report["target"]
    fig.suptitle(f"{target['model']} at {target['url']} ({target['endpoint']})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _one_line(summary: dict) -> str:
    key = "rate" if "rate" in summary else "concurrency"
    return (
        f"{key}={summary[key]}: {summary['num_ok']}/{summary['num_requests']} ok, "
        f"{summary['request_throughput']:.2f} req/s, "
        f"{summary['output_token_throughput']:.1f} out tok/s, "
        f"TTFT p50 {summary['ttft_s']['p50']:.3f} s, ITL p50 {summary['itl_s']['p50']:.4f} s, "
        f"E2E p99 {summary['e2e_s']['p99']:.3f} s, errors {summary['errors']}"
    )


def _logit_bias(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    bias = {}
    for item in text.split(","):
        token, _, value = item.partition(":")
        if not token.strip().isdigit() or not value:
            raise ValueError(f"--logit-bias needs TOKEN_ID:BIAS pairs, got '{item}'")
        bias[token.strip()] = float(value)
    return bias


def _ints(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise ValueError(f"--concurrency needs positive integers, got '{text}'")
    return values


def _floats(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or min(values) <= 0:
        raise ValueError(f"--rate needs positive numbers, got '{text}'")
    return values
