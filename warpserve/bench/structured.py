"""`warpserve bench structured`: the cost of structured output under load.

The same seeded load (prompts, max_tokens, concurrency) runs with all, half and none of
the requests constrained by a JSON Schema, and the report gives output tokens/s, TTFT and
inter-token latency per run, the constrained runs' throughput as a ratio of the
unconstrained one, and the grammar's own cost from the server's /metrics: mask time per
constrained token and per step.

Every request generates exactly max_tokens: unconstrained ones with ignore_eos; constrained
ones with a schema that cannot complete sooner (an array of at least 64 records) and EOS
biased by -100 (ignore_eos and a constraint are refused together). Runs at one level
alternate none / half / all, `--rounds` times, so drift on a shared machine is spread
over all three; the best round of each is reported.

Without --url the model is served in this process (engine thread + uvicorn), like
`warpserve serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from warpserve.bench.datasets import parse_range
from warpserve.bench.load import RequestResult, RequestSpec, Target, client_for, send
from warpserve.bench.report import environment, percentiles, write_json

logger = logging.getLogger(__name__)

_RECORD = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 24},
    },
    "required": ["name", "age", "city"],
}
SCHEMA = {"type": "array", "items": _RECORD, "minItems": 64}
_PROMPT = "List people as JSON records (name, age, city). Context: "


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="a running server; default: serve here")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--num-threads", type=int, default=None, help="engine threads")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated client counts")
    parser.add_argument("--fractions", default="0,0.5,1", help="constrained fractions to run")
    parser.add_argument("--num-requests", type=int, default=16, help="per run")
    parser.add_argument("--input-len", default="16:48", help="context words, LOW:HIGH")
    parser.add_argument("--output-len", default="64:64", help="max_tokens, LOW:HIGH")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per level")
    parser.add_argument("--eos-token-id", type=int, default=None, help="with --url")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="bench-structured.json")
    parser.add_argument(
        "--backends",
        action="store_true",
        help="instead: xgrammar against llguidance (compile cold / cached, mask per token)",
    )


@dataclass(frozen=True)
class StructuredSpec(RequestSpec):
    is_constrained: bool = False


@dataclass(frozen=True)
class StructuredTarget(Target):
    eos_token_id: int | None = None

    def body(self, spec: RequestSpec) -> dict[str, object]:
        body = super().body(spec)
        if isinstance(spec, StructuredSpec) and spec.is_constrained:
            body.pop("ignore_eos", None)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "people", "schema": SCHEMA},
            }
            if self.eos_token_id is not None:
                body["logit_bias"] = {str(self.eos_token_id): -100.0}
        return body


def run(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.backends:
        from warpserve.bench.structured_backends import measure_backends

        return measure_backends(args)
    server = None if args.url else _LocalServer.start(args.model, args.num_threads)
    try:
        url = args.url or server.url  # type: ignore[union-attr]
        eos = args.eos_token_id if args.url else server.eos_token_id  # type: ignore[union-attr]
        target = StructuredTarget(url=url.rstrip("/"), model=args.model, eos_token_id=eos)
        report = _measure(args, target)
    finally:
        if server is not None:
            server.stop()
    out = write_json(args.output, report)
    print(format_table(report["runs"]))
    print(f"wrote {out}")
    return 0 if all(r["num_ok"] == r["num_requests"] for r in report["runs"]) else 1


def _measure(args: argparse.Namespace, target: StructuredTarget) -> dict[str, Any]:
    levels = [int(c) for c in args.concurrency.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    warm = make_specs(args, max(levels), 1.0) + make_specs(args, max(levels), 0.0)
    asyncio.run(_run(target, warm, max(levels)))
    runs = []
    for level in levels:
        best: dict[float, dict[str, Any]] = {}
        for _ in range(args.rounds):
            for fraction in fractions:
                summary = _one_run(target, make_specs(args, args.num_requests, fraction), level)
                summary.update(concurrency=level, constrained_fraction=fraction)
                logger.info("%s", summary)
                old = best.get(fraction)
                if (
                    old is None
                    or summary["output_token_throughput"] > old["output_token_throughput"]
                ):
                    best[fraction] = summary
        base = best.get(0.0)
        for fraction in fractions:
            if base:
                ratio = best[fraction]["output_token_throughput"] / base["output_token_throughput"]
                best[fraction]["throughput_vs_unconstrained"] = ratio
            runs.append(best[fraction])
    config = {k: v for k, v in vars(args).items() if k != "func"}
    return {
        "benchmark": "structured",
        "schema": SCHEMA,
        "config": config,
        "runs": runs,
        "environment": environment(),
    }


def make_specs(args: argparse.Namespace, num: int, fraction: float) -> list[StructuredSpec]:
    """The same seeded prompts and lengths for every fraction; which are constrained is
    the first round(fraction * num) of a seeded shuffle."""
    rng = random.Random(args.seed)
    in_lo, in_hi = parse_range(args.input_len)
    out_lo, out_hi = parse_range(args.output_len)
    words = [
        "the",
        "a",
        "people",
        "city",
        "of",
        "in",
        "and",
        "name",
        "age",
        "record",
        "list",
        "data",
        "table",
        "row",
        "field",
    ]
    base = []
    for _ in range(num):
        context = " ".join(rng.choice(words) for _ in range(rng.randint(in_lo, in_hi)))
        base.append((_PROMPT + context, rng.randint(out_lo, out_hi)))
    chosen = set(random.Random(args.seed + 1).sample(range(num), round(fraction * num)))
    return [
        StructuredSpec(prompt=p, max_tokens=m, is_constrained=i in chosen)
        for i, (p, m) in enumerate(base)
    ]


def _one_run(target: StructuredTarget, specs: list[StructuredSpec], level: int) -> dict[str, Any]:
    before = _scrape(target.url)
    started = time.perf_counter()
    pairs = asyncio.run(_run(target, specs, level))
    duration = time.perf_counter() - started
    after = _scrape(target.url)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    ok = [r for _, r in pairs if r.ok]
    out_tokens = sum(r.output_tokens for r in ok)
    rows = delta.get("warpserve:structured_masked_rows_total", 0.0)
    steps = delta.get("warpserve:structured_mask_steps_total", 0.0)
    mask_s = delta.get("warpserve:structured_mask_seconds_total", 0.0)
    return {
        "num_requests": len(pairs),
        "num_ok": len(ok),
        "num_constrained": sum(s.is_constrained for s, _ in pairs),
        "duration_s": duration,
        "output_tokens": out_tokens,
        "output_token_throughput": out_tokens / duration,
        "ttft_s": percentiles([r.ttft_s for r in ok if r.ttft_s is not None]),
        "itl_s": percentiles([gap for r in ok for gap in r.itl_s]),
        "mask_ms_per_constrained_token": 1e3 * mask_s / rows if rows else 0.0,
        "mask_ms_per_step": 1e3 * mask_s / steps if steps else 0.0,
        "mask_share_of_duration": mask_s / duration,
    }


async def _run(
    target: StructuredTarget, specs: list[StructuredSpec], concurrency: int
) -> list[tuple[StructuredSpec, RequestResult]]:
    pending = list(reversed(specs))
    done: list[tuple[StructuredSpec, RequestResult]] = []
    async with client_for(target, concurrency) as client:

        async def worker() -> None:
            while pending:
                spec = pending.pop()
                done.append((spec, await send(client, target, spec)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def _scrape(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    values = {}
    for line in text.splitlines():
        if line.startswith("warpserve:structured"):
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


def format_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| clients | constrained | out tok/s | vs none | TTFT p50 ms | ITL p50 ms | mask ms/token | mask ms/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['concurrency']} | {r['num_constrained']}/{r['num_requests']} "
            f"| {r['output_token_throughput']:.1f} | {r.get('throughput_vs_unconstrained', 1.0):.2f}x "
            f"| {1e3 * r['ttft_s']['p50']:.0f} | {1e3 * r['itl_s']['p50']:.1f} "
            f"| {r['mask_ms_per_constrained_token']:.3f} | {r['mask_ms_per_step']:.3f} |"
        )
    return "\n".join(lines)


class _LocalServer:
    """The engine and the HTTP server in this process, on a free port."""

    def __init__(self, engine: Any, server: Any, sock: socket.socket) -> None:
        self.engine, self.server, self.sock = engine, server, sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.eos_token_id = min(engine.tokenizer.eos_token_ids)
        self.thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)

    @classmethod
    def start(cls, model: str, num_threads: int | None) -> _LocalServer:
        import uvicorn

        from warpserve.config import EngineConfig, ModelConfig
        from warpserve.engine.async_engine import AsyncLLM
        from warpserve.server.app import create_app

        engine = AsyncLLM.from_config(
            EngineConfig(model=ModelConfig(model=model, num_threads=num_threads))
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        app = create_app(engine, None)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        local = cls(engine, server, sock)
        local.thread.start()
        while not server.started:
            time.sleep(0.05)
        return local

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        self.engine.shutdown()
