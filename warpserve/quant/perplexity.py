"""Perplexity of any logits function on a text file, and the accuracy gate for variants.

The gate compares a variant (a quantized model, a compiled one) with the fp32 reference on
the same token windows and refuses it when its perplexity rises by more than the scheme's
budget: +1.5% for int8 weight-only and W8A8, +5% for int4.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

LogitsFn = Callable[[torch.Tensor], torch.Tensor]  # input_ids [1, T] -> logits [1, T, V]

# Largest allowed relative perplexity increase over the fp32 reference, per scheme.
BUDGETS: dict[str, float] = {
    "int8": 0.015,
    "w8a8": 0.015,
    "int8-mixed": 0.015,
    "int4": 0.05,
}


class AccuracyGateError(RuntimeError):
    """A variant's perplexity exceeds its budget; pass force=True to use it anyway."""


@dataclass(frozen=True)
class EvalConfig:
    """Which tokens are scored: `num_windows` non-overlapping windows of `window_tokens`
    tokens, picked with `seed` among the aligned windows of the file. Each window is one
    forward pass; all its tokens but the first are scored, with the window as context."""

    num_windows: int = 8
    window_tokens: int = 512
    seed: int = 0
    max_chars: int | None = None  # tokenize only the file's first characters (small CI slices)

    def __post_init__(self) -> None:
        if self.num_windows < 1:
            raise ValueError("num_windows must be >= 1")
        if self.window_tokens < 2:
            raise ValueError("window_tokens must be >= 2: the first token is context only")
        if self.max_chars is not None and self.max_chars < 1:
            raise ValueError("max_chars must be >= 1, or None for the whole file")


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    mean_nll: float  # nats per scored token
    num_scored_tokens: int
    window_starts: tuple[int, ...]  # token offsets: identifies the data that was scored


@dataclass(frozen=True)
class GateReport:
    scheme: str
    budget: float  # allowed relative increase
    reference: PerplexityResult
    variant: PerplexityResult
    relative_increase: float  # variant / reference - 1
    passed: bool

    def summary(self) -> str:
        verdict = "within" if self.passed else "OVER"
        return (
            f"{self.scheme}: perplexity {self.variant.perplexity:.4f} vs fp32 "
            f"{self.reference.perplexity:.4f} ({self.relative_increase:+.2%}), {verdict} the "
            f"{self.budget:+.1%} budget on {self.variant.num_scored_tokens} tokens"
        )


def load_token_ids(
    path: str | Path, encode: Callable[[str], list[int]], max_chars: int | None = None
) -> torch.Tensor:
    """Text file -> token ids [N] int64, with the model's own tokenizer (`encode`)."""
    text = Path(path).read_text(encoding="utf-8")
    if max_chars is not None:
        text = text[:max_chars]
    return torch.tensor(encode(text), dtype=torch.long)


def sample_window_starts(num_ids: int, config: EvalConfig) -> tuple[int, ...]:
    """Seeded choice of `num_windows` aligned, non-overlapping window offsets, sorted."""
    num_slots = num_ids // config.window_tokens
    if num_slots < config.num_windows:
        raise ValueError(
            f"{num_ids} tokens hold only {num_slots} windows of {config.window_tokens}; "
            f"ask for fewer windows, shorter ones or more text (max_chars)"
        )
    generator = torch.Generator().manual_seed(config.seed)
    slots = torch.randperm(num_slots, generator=generator)[: config.num_windows]
    return tuple(sorted(int(s) * config.window_tokens for s in slots))


@torch.inference_mode()
def perplexity(
    logits_fn: LogitsFn, token_ids: torch.Tensor, config: EvalConfig
) -> PerplexityResult:
    starts = sample_window_starts(token_ids.numel(), config)
    total_nll, num_scored = 0.0, 0
    for start in starts:
        ids = token_ids[start : start + config.window_tokens][None]  # [1, T]
        logits = logits_fn(ids)  # [1, T, V]
        # position t predicts token t + 1
        nll = F.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="sum")
        total_nll += float(nll)
        num_scored += ids.shape[1] - 1
    mean_nll = total_nll / num_scored
    return PerplexityResult(math.exp(mean_nll), mean_nll, num_scored, starts)


def gate(
    scheme: str,
    reference: PerplexityResult,
    variant: PerplexityResult,
    *,
    budget: float | None = None,
    force: bool = False,
) -> GateReport:
    """Accept or refuse `variant`; raises AccuracyGateError when over budget unless force."""
    if reference.window_starts != variant.window_starts:
        raise ValueError("reference and variant were scored on different windows")
    if budget is None:
        if scheme not in BUDGETS:
            raise ValueError(
                f"no budget for scheme '{scheme}': pass budget= or use one of {list(BUDGETS)}"
            )
        budget = BUDGETS[scheme]
    increase = variant.perplexity / reference.perplexity - 1.0
    report = GateReport(scheme, budget, reference, variant, increase, increase <= budget)
    if not report.passed:
        if not force:
            raise AccuracyGateError(
                f"refusing {report.summary()}; use a finer scheme (int8, or int4 with a smaller "
                "group_size), exclude sensitive layers, or pass force=True to accept it"
            )
        logger.warning("accepted by force: %s", report.summary())
    return report


def check_variant(
    reference_fn: LogitsFn,
    variant_fn: LogitsFn,
    token_ids: torch.Tensor,
    scheme: str,
    config: EvalConfig = EvalConfig(),
    *,
    force: bool = False,
) -> GateReport:
    """Score both on the same windows, then gate()."""
    reference = perplexity(reference_fn, token_ids, config)
    variant = perplexity(variant_fn, token_ids, config)
    return gate(scheme, reference, variant, force=force)


def module_logits_fn(model: torch.nn.Module) -> LogitsFn:
    """A causal LM module -> LogitsFn; accepts outputs with `.logits` (Transformers) or a
    plain logits tensor (native models)."""

    def logits_fn(input_ids: torch.Tensor) -> torch.Tensor:
        out = model(input_ids)
        return out.logits if hasattr(out, "logits") else out

    return logits_fn
