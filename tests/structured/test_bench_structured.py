"""`warpserve bench structured`: the same load in every arm, only the constraint differs."""

from __future__ import annotations

import argparse

from warpserve.bench.structured import (
    SCHEMA,
    StructuredTarget,
    add_arguments,
    format_table,
    make_specs,
)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_fraction_runs_the_same_prompts_and_lengths() -> None:
    args = _args("--num-requests", "8")
    arms = {f: make_specs(args, 8, f) for f in (0.0, 0.5, 1.0)}
    shapes = {f: [(s.prompt, s.max_tokens) for s in specs] for f, specs in arms.items()}
    assert shapes[0.0] == shapes[0.5] == shapes[1.0]
    assert [sum(s.is_constrained for s in arms[f]) for f in (0.0, 0.5, 1.0)] == [0, 4, 8]


def test_constrained_bodies_carry_the_schema_and_no_ignore_eos() -> None:
    [spec] = [s for s in make_specs(_args(), 4, 0.5) if s.is_constrained][:1]
    target = StructuredTarget(url="http://x", model="m", eos_token_id=2)
    body = target.body(spec)
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA  # type: ignore[index]
    assert "ignore_eos" not in body and body["logit_bias"] == {"2": -100.0}
    plain = next(s for s in make_specs(_args(), 4, 0.5) if not s.is_constrained)
    assert target.body(plain)["ignore_eos"] is True and "response_format" not in target.body(plain)


def test_table_has_a_row_per_run() -> None:
    run = {
        "concurrency": 1,
        "num_constrained": 2,
        "num_requests": 4,
        "output_token_throughput": 10.0,
        "throughput_vs_unconstrained": 0.95,
        "ttft_s": {"p50": 0.1},
        "itl_s": {"p50": 0.05},
        "mask_ms_per_constrained_token": 0.2,
        "mask_ms_per_step": 0.3,
    }
    assert "| 1 | 2/4 | 10.0 | 0.95x |" in format_table([run])
