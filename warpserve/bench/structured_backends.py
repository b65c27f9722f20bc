"""`warpserve bench structured --backends`: xgrammar against llguidance on one tokenizer.

Per schema and backend: a cold compile (nothing cached), a cached one (warpserve's
compiler cache), and the time to compute one token's mask (fill the bitmask row) along a
valid answer, median and mean over its tokens; then the sampler's cost of applying a
filled bitmask to the logits (unpack + select) for 1 and 16 rows. Single thread, the
best of --rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from warpserve.bench.report import environment, write_json
from warpserve.structured.backends import LLGuidanceBackend, XGrammarBackend
from warpserve.structured.compiler import GrammarCompiler
from warpserve.structured.spec import GrammarRequest, StructuredKind

_PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
_NESTED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "capital": _PERSON,
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["name", "capital", "tags", "score"],
}
CASES = [
    ("flat object", _PERSON, {"name": "Ada Lovelace", "age": 36}),
    (
        "nested + enums + bounds",
        _NESTED,
        {
            "name": "France",
            "capital": {"name": "Paris", "age": 2000},
            "tags": ["red"],
            "score": 0.5,
        },
    ),
]


def measure_backends(args: argparse.Namespace) -> int:
    from warpserve.weights.loader import open_model_source

    torch.set_num_threads(1)
    tokenizer = open_model_source(args.model).load_tokenizer()
    make = (tokenizer.hf, tokenizer.vocab_size, sorted(tokenizer.eos_token_ids))
    rows = []
    for backend_cls in (XGrammarBackend, LLGuidanceBackend):
        started = time.perf_counter()
        backend = backend_cls(*make)
        if isinstance(backend, LLGuidanceBackend):
            backend.warm_up()  # its tokenizer is built on first use: count it as set-up
        setup_s = time.perf_counter() - started
        for name, schema, answer in CASES:
            text = json.dumps(answer, separators=(", ", ": "))
            token_ids = tokenizer.encode(text, add_special_tokens=False)
            row = _measure(backend, schema, token_ids, args.rounds)
            rows.append({"backend": backend.name, "schema": name, "setup_s": setup_s, **row})
    apply = _apply_cost(tokenizer.vocab_size, args.rounds)
    report = {
        "benchmark": "structured-backends",
        "model": args.model,
        "rows": rows,
        "apply_us": apply,
        "environment": environment(),
    }
    out = write_json(args.output, report)
    print(format_backends(rows, apply))
    print(f"wrote {out}")
    return 0


def _measure(backend: Any, schema: dict, token_ids: list[int], rounds: int) -> dict[str, float]:
    request = GrammarRequest(StructuredKind.JSON_SCHEMA, json.dumps(schema))
    colds, cached, fills = [], [], []
    for _ in range(rounds):
        compiler = GrammarCompiler(backend)
        started = time.perf_counter()
        spec = compiler.compile(request)
        colds.append(time.perf_counter() - started)
        started = time.perf_counter()
        compiler.compile(request)
        cached.append(time.perf_counter() - started)
        matcher = spec.grammar.new_matcher()
        bitmask = torch.full((1, -(-spec.grammar.vocab_size // 32)), -1, dtype=torch.int32)
        per_token = []
        for token_id in token_ids:
            started = time.perf_counter()
            matcher.fill_bitmask(bitmask, 0)
            per_token.append(time.perf_counter() - started)
            assert matcher.accept(token_id), f"{backend.name} refused its own answer"
        fills.append(per_token)
    best = min(fills, key=sum)
    return {
        "compile_cold_ms": 1e3 * min(colds),
        "compile_cached_ms": 1e3 * min(cached),
        "mask_us_median": 1e6 * statistics.median(best),
        "mask_us_mean": 1e6 * statistics.fmean(best),
        "num_tokens": len(token_ids),
    }


def _apply_cost(vocab_size: int, rounds: int) -> dict[str, float]:
    """The sampler's unpack + select for a filled bitmask, per number of constrained rows."""
    from warpserve.sampling.grammar import masked_logits, unpack_bitmask

    out = {}
    for num_rows in (1, 16):
        logits = torch.randn(num_rows, vocab_size)
        bitmask = torch.randint(
            -(2**31), 2**31 - 1, (num_rows, -(-vocab_size // 32)), dtype=torch.int32
        )
        times = []
        for _ in range(max(rounds, 20)):
            started = time.perf_counter()
            masked_logits(logits, list(range(num_rows)), unpack_bitmask(bitmask, vocab_size))
            times.append(time.perf_counter() - started)
        out[f"rows_{num_rows}"] = 1e6 * min(times)
    return out


def format_backends(rows: list[dict[str, Any]], apply: dict[str, float]) -> str:
    lines = [
        "| backend | schema | set-up s | compile cold ms | compile cached ms | mask us/token median | mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['schema']} | {r['setup_s']:.2f} | {r['compile_cold_ms']:.1f} "
            f"| {r['compile_cached_ms']:.3f} | {r['mask_us_median']:.1f} | {r['mask_us_mean']:.1f} |"
        )
    lines.append("")
    lines.append(
        f"applying a filled bitmask in the sampler: {apply['rows_1']:.0f} us for 1 row, "
        f"{apply['rows_16']:.0f} us for 16 rows"
    )
    return "\n".join(lines)
