"""Quantization as a module swap: int8 / int4 weight-only and W8A8 linears, presets by name,
and the perplexity gate that compares a variant with the fp32 model on the same text.

The engine applies a preset without scoring it (that needs reference text and a second
forward over it); `warpserve bench accuracy` runs the gate for every preset, and any
caller can run `check_variant` before serving a variant of its own."""

from warpserve.quant.linear import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    QuantizedLinear,
    W8A8Linear,
)
from warpserve.quant.perplexity import (
    BUDGETS,
    AccuracyGateError,
    EvalConfig,
    GateReport,
    PerplexityResult,
    check_variant,
    gate,
    load_token_ids,
    module_logits_fn,
    perplexity,
)
from warpserve.quant.swap import SCHEMES, quantize_model, select_linears

__all__ = [
    "BUDGETS",
    "SCHEMES",
    "AccuracyGateError",
    "EvalConfig",
    "GateReport",
    "Int4WeightOnlyLinear",
    "Int8WeightOnlyLinear",
    "PerplexityResult",
    "QuantizedLinear",
    "W8A8Linear",
    "check_variant",
    "gate",
    "load_token_ids",
    "module_logits_fn",
    "perplexity",
    "quantize_model",
    "select_linears",
]
