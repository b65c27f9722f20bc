"""The ladder's rungs: what each one runs, on the shared prompts, and the row it reports.

`Ladder` holds what every rung shares (the arguments, the prompts, the perplexity windows
and the fp32 reference) and at most one loaded model and one engine at a time, so that two
rungs with the same configuration (2 and 3; 5 and 6's model) reuse them and the memory of
the previous one is freed first. A rung that fails records its error and the run goes on.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from warpserve.bench.ladder_runs import RunResult, model_logits_fn, run_engine, run_hf, warm_up

logger = logging.getLogger(__name__)

RUNG_NAMES = {
    0: "Transformers generate, no KV cache, batch 1",
    1: "Transformers generate, KV cache, batch 1",
    2: "warpserve eager fp32, one stream",
    3: "+ continuous batching",
    4: "+ quantization",
    5: "+ fused decode",
    6: "+ speculative decoding",
}


@dataclass
class Measured:
    single: RunResult | None
    concurrent: RunResult | None
    notes: list[str]


@dataclass
class Ladder:
    args: Any
    tokenizer: Any
    prompts: list[list[int]]  # the concurrent workload; the other workloads are its prefixes
    ppl_token_ids: torch.Tensor
    eval_config: Any  # quant.perplexity.EvalConfig
    reference: Any = None  # PerplexityResult of the fp32 native model
    rows: dict[int, dict] = field(default_factory=dict)
    chosen_quantization: str | None = None  # rung 4's choice, then rung 5's
    quantizations_within_budget: list[str] = field(default_factory=list)  # rung 4's
    tokens_by_rung: dict[int, Measured] = field(default_factory=dict)
    _loaded: tuple[Any, Any] | None = None  # (ModelConfig, LoadedModel)
    _engine: tuple[Any, Any] | None = None  # (EngineConfig, LLMEngine)
    _hf: Any = None
    _hf_perplexity: float | None = None

    @classmethod
    def start(cls, args) -> Ladder:
        from warpserve.quant.perplexity import EvalConfig, load_token_ids

        torch.set_num_threads(args.threads)
        ladder = cls(args, None, [], torch.empty(0), None)
        loaded = ladder.loaded(ladder.engine_config().model)
        ladder.tokenizer = loaded.tokenizer
        ladder.prompts = build_prompts(args, loaded.tokenizer)
        ladder.eval_config = EvalConfig(
            args.ppl_windows, args.ppl_window_tokens, args.seed, args.ppl_max_chars
        )
        ppl_text = args.ppl_text or str(_default_text())
        encode = lambda text: loaded.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
        ladder.ppl_token_ids = load_token_ids(ppl_text, encode, args.ppl_max_chars)
        ladder.reference = ladder.perplexity(loaded.model)
        logger.info("fp32 reference perplexity %.4f", ladder.reference.perplexity)
        return ladder

    @property
    def single_prompts(self) -> list[list[int]]:
        return self.prompts[: self.args.single_stream_requests]

    # -- models and engines -----------------------------------------------------------

    def engine_config(self, quantization="none", decode_backend="eager", spec_method="none"):
        from warpserve.config import (
            CacheConfig,
            EngineConfig,
            ModelConfig,
            SchedulerConfig,
            SpeculativeConfig,
        )

        args = self.args
        return EngineConfig(
            model=ModelConfig(
                model=args.model,
                num_threads=args.threads,
                quantization=quantization,
                decode_backend=decode_backend,
            ),
            # Off: HF and llama.cpp cache nothing across requests, and the single-stream
            # prompts are a prefix of the concurrent ones.
            cache=CacheConfig(memory_gib=args.kv_cache_gib, enable_prefix_caching=False),
            scheduler=SchedulerConfig(
                max_num_seqs=args.concurrency,
                max_num_batched_tokens=max(args.max_num_batched_tokens, args.concurrency),
            ),
            speculative=SpeculativeConfig(
                method=spec_method, num_speculative_tokens=args.num_speculative_tokens
            ),
            seed=args.seed,
        )

    def loaded(self, model_config):
        from warpserve.engine.setup import load_model

        if self._loaded is None or self._loaded[0] != model_config:
            self._engine = self._loaded = None
            gc.collect()
            cache = self.engine_config().cache
            self._loaded = (model_config, load_model(model_config, cache))
        return self._loaded[1]

    def engine(self, config) -> tuple[Any, list[str]]:
        """(a warmed-up engine for config, warnings logged while building it)."""
        from warpserve.engine.llm_engine import LLMEngine

        if self._engine is not None and self._engine[0] == config:
            return self._engine[1], []
        self._engine = None
        with captured_warnings() as warnings:
            loaded = self.loaded(config.model)
            gc.collect()
            torch.manual_seed(config.seed)
            engine = LLMEngine(loaded, config)
            warm_up(engine)
        self._engine = (config, engine)
        return engine, warnings

    def hf(self):
        from warpserve.bench.hf_baseline import load_hf_model

        if self._hf is None:
            self._engine = self._loaded = None
            gc.collect()
            self._hf = load_hf_model(self.args.model, "float32")
        return self._hf

    def hf_perplexity(self) -> float:
        if self._hf_perplexity is None:
            self._hf_perplexity = self.perplexity(self.hf()).perplexity
        return self._hf_perplexity

    def close(self) -> None:
        self._engine = self._loaded = self._hf = None
        gc.collect()

    # -- measurements -----------------------------------------------------------------

    def measure(self, config, *, single: bool, concurrent: bool) -> Measured:
        engine, notes = self.engine(config)
        args = self.args
        return Measured(
            run_engine(engine, self.single_prompts, args.output_len, 1) if single else None,
            run_engine(engine, self.prompts, args.output_len, args.concurrency)
            if concurrent
            else None,
            notes,
        )

    def perplexity(self, model):
        from warpserve.quant.perplexity import perplexity

        logits_fn = model_logits_fn(model, self.eval_config.window_tokens)
        return perplexity(logits_fn, self.ppl_token_ids, self.eval_config)

    def ppl_windows(self) -> list[list[int]]:
        from warpserve.quant.perplexity import sample_window_starts

        ids = self.ppl_token_ids
        size = self.eval_config.window_tokens
        starts = sample_window_starts(ids.numel(), self.eval_config)
        return [ids[s : s + size].tolist() for s in starts]

    def run_rung(self, rung: int, measure_rung: Callable[[Ladder], dict]) -> None:
        logger.info("rung %d: %s", rung, RUNG_NAMES[rung])
        load_average = os.getloadavg()[0]
        try:
            self.rows[rung] = measure_rung(self)
        except Exception as exc:  # one failed rung must not lose the others' numbers
            logger.exception("rung %d failed", rung)
            self.rows[rung] = {"rung": rung, "name": RUNG_NAMES[rung], "error": repr(exc)}
        self.rows[rung]["load_average_at_start"] = load_average


# -- prompts ----------------------------------------------------------------------------


def _default_text():
    from warpserve.bench import datasets

    return datasets.find_text(None)


def build_prompts(args, tokenizer) -> list[list[int]]:
    """`num_requests` seeded prompts as token ids; every rung uses these (or a prefix)."""
    from warpserve.bench import datasets

    text = datasets.find_text(args.text)
    if args.prompts == "wikitext":
        corpus = datasets.corpus_token_ids(tokenizer, text)
        low, high = datasets.parse_range(args.prompt_len)
        lengths = datasets.sample_lengths(low, high, args.num_requests, args.seed)
        return datasets.sample_prompts(corpus, lengths, args.seed)
    # The speculative-decoding bench's input-grounded requests (spec.py): the same kind of
    # prompt that rung 6 is meant for, chat-templated as a user would send them.
    from warpserve.bench import spec

    passages = spec._passages(text, args.seed)
    grounded = spec._grounded_prompts(passages, args.num_requests, args.seed)
    encode = spec._encoder(tokenizer)
    return [encode(content) for _, content in grounded]


@contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Warnings logged under `warpserve` meanwhile (e.g. a fused-decode fallback)."""
    messages: list[str] = []

    class _Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.name}: {record.getMessage()}")

    handler = _Handler(logging.WARNING)
    root = logging.getLogger("warpserve")
    root.addHandler(handler)
    try:
        yield messages
    finally:
        root.removeHandler(handler)


# -- rows -------------------------------------------------------------------------------


def row(
    rung: int,
    system: str,
    headline: RunResult,
    single: RunResult | None,
    perplexity: float | None,
    **extra: Any,
) -> dict[str, Any]:
    """The fields every rung reports; `headline` is the workload its tokens/s come from."""
    return {
        "rung": rung,
        "name": extra.pop("name", RUNG_NAMES[rung]),
        "system": system,
        "generated_tokens_per_s": headline.generated_tokens_per_s,
        "decode_tokens_per_s": single.decode_tokens_per_s if single else None,
        "ttft_p50_s": headline.ttft_s["p50"],
        "cores_used": headline.cores_used,
        "perplexity": perplexity,
        "workload": headline.summary(),
        "single_stream": single.summary() if single else None,
        "notes": extra.pop("notes", []),
        **extra,
    }


def _rung0(ladder: Ladder) -> dict:
    args = ladder.args
    prompts = ladder.prompts[: args.naive_requests]
    result = run_hf(ladder.hf(), prompts, args.naive_output_len, use_cache=False)
    notes = [f"{len(prompts)} requests x {args.naive_output_len} new tokens (rates are per token)"]
    return row(0, "transformers", result, result, ladder.hf_perplexity(), notes=notes)


def _rung1(ladder: Ladder) -> dict:
    result = run_hf(ladder.hf(), ladder.single_prompts, ladder.args.output_len, use_cache=True)
    return row(1, "transformers", result, result, ladder.hf_perplexity())


def _rung2(ladder: Ladder) -> dict:
    measured = ladder.measure(ladder.engine_config(), single=True, concurrent=False)
    ladder.tokens_by_rung[2] = measured
    single = measured.single
    assert single is not None
    config = {"quantization": "none", "decode_backend": "eager"}
    return row(2, "warpserve", single, single, ladder.reference.perplexity, config=config)


def _rung3(ladder: Ladder) -> dict:
    measured = ladder.measure(ladder.engine_config(), single=False, concurrent=True)
    ladder.tokens_by_rung[3] = measured
    assert measured.concurrent is not None
    name = f"{RUNG_NAMES[3]} ({ladder.args.concurrency} concurrent)"
    config = {"quantization": "none", "decode_backend": "eager"}
    reference = ladder.reference.perplexity
    return row(3, "warpserve", measured.concurrent, None, reference, name=name, config=config)


BASE_RUNGS = {0: _rung0, 1: _rung1, 2: _rung2, 3: _rung3}
