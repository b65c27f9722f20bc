"""Constraints in: a GrammarRequest -> a compiled StructuredSpec on SamplingParams, or a 400.

Shared by the OpenAI and Hugging Face routes. The compiler (one per app, built on first
use off the event loop) compiles on its own thread, so the event loop keeps serving and
the engine only ever sees compiled grammars: a request is submitted once its grammar is
ready, and one whose grammar does not compile is refused before admission.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

from fastapi import Request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from warpserve.request import SamplingParams
from warpserve.server.errors import bad_request
from warpserve.server.state import get_state
from warpserve.structured.compiler import GrammarCompiler
from warpserve.structured.spec import GrammarError, GrammarRequest, StructuredStats


async def constrain(
    request: Request, params: SamplingParams, asked: tuple[GrammarRequest, str] | None
) -> SamplingParams:
    """params with the compiled constraint `asked` (the request and the field that asked
    for it); a 400 naming the field when it does not compile."""
    if asked is None:
        return params
    grammar, param = asked
    if params.ignore_eos:
        raise bad_request("ignore_eos cannot be combined with a structured output", param=param)
    if params.min_tokens:
        raise bad_request("min_tokens cannot be combined with a structured output", param=param)
    try:
        compiler = await grammar_compiler(request)
        spec = await compiler.compile_async(grammar)
    except GrammarError as exc:
        raise bad_request(f"{param}: {exc}", param=param) from None
    compiler.stats.add(num_requests=1)
    return dataclasses.replace(params, structured=spec)


async def grammar_compiler(request: Request) -> GrammarCompiler:
    """The app's compiler; building it reads the whole vocabulary (~0.2 s), so off the loop."""
    app_state = request.app.state
    lock = getattr(app_state, "grammar_compiler_lock", None)
    if lock is None:
        lock = app_state.grammar_compiler_lock = asyncio.Lock()
    async with lock:
        compiler: GrammarCompiler | None = getattr(app_state, "grammar_compiler", None)
        if compiler is None:
            state = get_state(request)
            tokenizer = state.tokenizer()
            try:
                compiler = await asyncio.to_thread(GrammarCompiler.for_tokenizer, tokenizer)
            except (AttributeError, TypeError, ValueError) as exc:  # no Transformers tokenizer
                raise GrammarError(
                    f"no grammar support for this model's tokenizer ({exc})"
                ) from None
            state.metrics.registry.register(StructuredCollector(compiler.stats))
            app_state.grammar_compiler = compiler
    return compiler


class StructuredCollector:
    """/metrics: constrained requests, grammar compiles and mask cost, read at scrape time."""

    def __init__(self, stats: StructuredStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield _counter(
            "structured_requests", "Requests with a structured-output constraint.", s.num_requests
        )
        yield _counter("structured_compiles", "Grammar compiles (cache misses).", s.num_compiles)
        yield _counter(
            "structured_compile_cache_hits", "Grammars found compiled.", s.num_cache_hits
        )
        yield _counter("structured_fallbacks", "Grammars compiled by llguidance.", s.num_fallbacks)
        yield _counter("structured_compile_seconds", "Time compiling grammars.", s.compile_seconds)
        yield _counter("structured_mask_steps", "Steps with a constrained row.", s.num_mask_steps)
        yield _counter("structured_masked_rows", "Constrained rows masked.", s.num_masked_rows)
        yield _counter(
            "structured_mask_seconds", "Time computing and applying masks.", s.mask_seconds
        )
        per_step = s.mask_seconds / s.num_mask_steps if s.num_mask_steps else 0.0
        gauge = GaugeMetricFamily(
            "warpserve:structured_mask_seconds_per_step", "Mean mask time per constrained step."
        )
        gauge.add_metric([], per_step)
        yield gauge


def _counter(name: str, doc: str, value: float) -> Metric:
    family = CounterMetricFamily(f"warpserve:{name}", doc)
    family.add_metric([], value)
    return family
