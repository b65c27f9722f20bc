"""Rungs 4-6: quantization chosen within the perplexity budget, the fused decode backend,
and speculative decoding that must leave rung 5's greedy tokens unchanged.

Each measures its configuration on both workloads (the single-stream prompts one at a
time, and all prompts at `--concurrency` in flight); the rung's tokens/s is the concurrent
one, and the choice between candidates is made on it: rung 4 picks the fastest preset
within its perplexity budget on the eager backend, rung 5 measures every preset that
passed again on the fused backend (the fastest format differs between the two: the eager
kernels dequantize, the fused ones read the stored bytes) and keeps the fastest whose
perplexity through the kernel is still within budget, and rung 6 picks ngram or auto.
"""

from __future__ import annotations

import logging
from typing import Any

from warpserve.bench.ladder_rungs import RUNG_NAMES, Ladder, Measured, row

logger = logging.getLogger(__name__)


def same_note(rung: int, reference: Measured | None, measured: Measured) -> str:
    """e.g. "greedy tokens == rung 4: single yes, concurrent NO (3/32 requests differ)"."""
    if reference is None:
        return f"rung {rung} not run: greedy tokens not compared"
    parts = []
    for workload in ("single", "concurrent"):
        ref, new = getattr(reference, workload), getattr(measured, workload)
        if ref is None or new is None:
            continue
        differ = sum(a != b for a, b in zip(ref.token_ids, new.token_ids, strict=True))
        verdict = "yes" if differ == 0 else f"NO ({differ}/{len(ref.token_ids)} requests differ)"
        parts.append(f"{workload} {verdict}")
    return f"greedy tokens == rung {rung}: {', '.join(parts)}"


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def identical(reference: Measured | None, measured: Measured) -> dict[str, bool] | None:
    """Whether each workload's greedy tokens equal the reference's, request by request."""
    if reference is None:
        return None
    same = {}
    for workload in ("single", "concurrent"):
        ref, new = getattr(reference, workload), getattr(measured, workload)
        if ref is not None and new is not None:
            same[workload] = ref.token_ids == new.token_ids
    return same


def _rates(measured: Measured) -> dict[str, Any]:
    assert measured.single is not None and measured.concurrent is not None
    return {
        "generated_tokens_per_s": measured.concurrent.generated_tokens_per_s,
        "decode_tokens_per_s": measured.single.decode_tokens_per_s,
        "ttft_p50_s": measured.concurrent.ttft_s["p50"],
        "single_stream": measured.single.summary(),
        "workload": measured.concurrent.summary(),
    }


# -- rung 4 -------------------------------------------------------------------------------


def _rung4(ladder: Ladder) -> dict:
    from warpserve.quant.perplexity import BUDGETS

    candidates: dict[str, dict[str, Any]] = {}
    measured_by: dict[str, Measured] = {}
    for preset in _names(ladder.args.quantizations):
        config = ladder.engine_config(quantization=preset)
        measured_by[preset] = ladder.measure(config, single=True, concurrent=True)
        ppl = ladder.perplexity(ladder.loaded(config.model).model).perplexity
        increase = ppl / ladder.reference.perplexity - 1
        budget = BUDGETS.get(preset, 0.0)
        candidates[preset] = {
            **_rates(measured_by[preset]),
            "perplexity": ppl,
            "perplexity_delta": increase,
            "budget": budget,
            "within_budget": increase <= budget,
            "warnings": measured_by[preset].notes,
        }
        rate = candidates[preset]["generated_tokens_per_s"]
        logger.info("  %s: %.1f tok/s, perplexity %+.2f%%", preset, rate, 100 * increase)
    within = [p for p, c in candidates.items() if c["within_budget"]]
    if not within:
        raise RuntimeError(f"no quantization preset within its perplexity budget: {candidates}")
    best = max(within, key=lambda p: candidates[p]["generated_tokens_per_s"])
    ladder.chosen_quantization = best
    ladder.quantizations_within_budget = within
    ladder.tokens_by_rung[4] = measured = measured_by[best]
    assert measured.concurrent is not None
    return row(
        4,
        "warpserve",
        measured.concurrent,
        measured.single,
        candidates[best]["perplexity"],
        name=f"{RUNG_NAMES[4]} ({best})",
        config={"quantization": best, "decode_backend": "eager"},
        candidates=candidates,
        notes=[f"{best}: fastest of {', '.join(within)} within budget"],
    )


# -- rung 5 -------------------------------------------------------------------------------


def _quantization(ladder: Ladder, notes: list[str]) -> str:
    if ladder.chosen_quantization is None:
        fallback = _names(ladder.args.quantizations)[0]
        notes.append(f"rung 4 did not choose a preset: {fallback} used")
        return fallback
    return ladder.chosen_quantization


def decode_backend_ran(requested: str, warnings: list[str]) -> str:
    """What ran for decode steps, from the warnings while building."""
    if requested == "eager":
        return "eager"
    fallback = [w for w in warnings if "fused" in w.lower() or "fall" in w.lower()]
    return f"eager (fallback: {'; '.join(fallback)})" if fallback else "fused"


def _fused_perplexity(ladder: Ladder, model) -> float | None:
    """Perplexity of what the fused kernel computes (its weight formats and attention), or
    None when it cannot run the model. Greedy tokens may differ from rung 4's eager
    quantized kernels (e.g. int4 with bfloat16 scales) while this stays within budget."""
    from warpserve.bench.ladder_runs import paged_logits_fn
    from warpserve.quant.perplexity import perplexity

    logits_fn = paged_logits_fn(model, ladder.eval_config.window_tokens, "fused")
    if logits_fn is None:
        return None
    return perplexity(logits_fn, ladder.ppl_token_ids, ladder.eval_config).perplexity


def _rung5(ladder: Ladder) -> dict:
    from warpserve.quant.perplexity import BUDGETS

    notes: list[str] = []
    presets = ladder.quantizations_within_budget or [_quantization(ladder, notes)]
    candidates: dict[str, dict[str, Any]] = {}
    measured_by: dict[str, Measured] = {}
    for preset in presets:
        config = ladder.engine_config(quantization=preset, decode_backend="fused")
        measured_by[preset] = measured = ladder.measure(config, single=True, concurrent=True)
        ran = decode_backend_ran("fused", measured.notes)
        model = ladder.loaded(config.model).model
        ppl = _fused_perplexity(ladder, model)
        through_kernel = ppl is not None
        if ppl is None:
            ppl = ladder.perplexity(model).perplexity
        increase = ppl / ladder.reference.perplexity - 1
        budget = BUDGETS.get(preset, 0.0)
        candidates[preset] = {
            **_rates(measured),
            "perplexity": ppl,
            "perplexity_through_kernel": through_kernel,
            "perplexity_delta": increase,
            "budget": budget,
            "within_budget": increase <= budget,
            "decode_backend_ran": ran,
            "warnings": measured.notes,
        }
        rate = candidates[preset]["generated_tokens_per_s"]
        logger.info("  %s fused: %.1f tok/s, perplexity %+.2f%%", preset, rate, 100 * increase)
    within = [p for p, c in candidates.items() if c["within_budget"]]
    if not within:
        raise RuntimeError(f"no preset within its perplexity budget when fused: {candidates}")
    best = max(within, key=lambda p: candidates[p]["generated_tokens_per_s"])
    ladder.chosen_quantization = best  # rung 6 speculates on top of this configuration
    ladder.tokens_by_rung[5] = measured = measured_by[best]
    assert measured.concurrent is not None
    chosen = candidates[best]
    if chosen["perplexity_through_kernel"]:
        notes.append("perplexity through the fused kernel")
    if len(within) > 1:
        notes.append(f"{best}: fastest fused of {', '.join(within)} within budget")
    ran = chosen["decode_backend_ran"]
    compared = same_note(4, ladder.tokens_by_rung.get(4), measured)
    if best != ladder.rows.get(4, {}).get("config", {}).get("quantization", best):
        compared += " (a different preset from rung 4's)"
    return row(
        5,
        "warpserve",
        measured.concurrent,
        measured.single,
        chosen["perplexity"],
        name=f"{RUNG_NAMES[5]} ({best})",
        config={"quantization": best, "decode_backend": "fused"},
        decode_backend_ran=ran,
        identical_to_rung4=identical(ladder.tokens_by_rung.get(4), measured),
        candidates=candidates if len(candidates) > 1 else {},
        warnings=measured.notes,
        notes=[*notes, f"decode ran: {ran}", compared],
    )


# -- rung 6 -------------------------------------------------------------------------------


def _spec_counters(ladder: Ladder, config) -> dict[str, Any]:
    stats = ladder.engine(config)[0].stats()
    num_draft = stats.spec_decode_num_draft_tokens
    return {
        "num_drafts": stats.spec_decode_num_drafts,
        "num_draft_tokens": num_draft,
        "num_accepted_tokens": stats.spec_decode_num_accepted_tokens,
        "acceptance_rate": stats.spec_decode_num_accepted_tokens / num_draft if num_draft else None,
    }


def _acceptance_note(candidate: dict[str, Any]) -> str:
    rate = candidate["acceptance_rate"]
    if rate is None:
        return "no drafts proposed"
    return f"{candidate['num_draft_tokens']} draft tokens, {rate:.0%} accepted"


def _is_lossless(same: dict[str, bool] | None) -> bool:
    """No reference (rung 5 not run) counts as lossless: nothing to compare with."""
    return same is None or all(same.values())


def _rung6(ladder: Ladder) -> dict:
    notes: list[str] = []
    quantization = _quantization(ladder, notes)
    rung5 = ladder.rows.get(5)
    backend = "fused" if rung5 is not None and "error" not in rung5 else "eager"
    if backend == "eager":
        notes.append("rung 5 did not run: speculation on the eager backend")
    reference = ladder.tokens_by_rung.get(5)
    candidates: dict[str, dict[str, Any]] = {}
    measured_by: dict[str, Measured] = {}
    for method in _names(ladder.args.spec_methods):
        config = ladder.engine_config(quantization, backend, spec_method=method)
        measured_by[method] = ladder.measure(config, single=True, concurrent=True)
        same = identical(reference, measured_by[method])
        candidates[method] = {
            **_rates(measured_by[method]),
            **_spec_counters(ladder, config),
            "identical_to_rung5": same,
        }
    lossless = [m for m, c in candidates.items() if _is_lossless(c["identical_to_rung5"])]
    pool = lossless or list(candidates)
    if not lossless:
        notes.append("NO candidate reproduced rung 5's greedy tokens")
    best = max(pool, key=lambda m: candidates[m]["generated_tokens_per_s"])
    measured = measured_by[best]
    assert measured.concurrent is not None
    rung5_ppl = rung5.get("perplexity") if rung5 is not None else None
    ppl = rung5_ppl or ladder.perplexity(ladder.loaded(config.model).model).perplexity
    return row(
        6,
        "warpserve",
        measured.concurrent,
        measured.single,
        ppl,
        name=f"{RUNG_NAMES[6]} ({best})",
        config={"quantization": quantization, "decode_backend": backend, "speculative": best},
        identical_to_rung5=candidates[best]["identical_to_rung5"],
        candidates=candidates,
        notes=[
            *notes,
            f"{best}: fastest of {', '.join(pool)}",
            same_note(5, reference, measured),
            _acceptance_note(candidates[best]),
        ],
    )


TOP_RUNGS = {4: _rung4, 5: _rung5, 6: _rung6}
