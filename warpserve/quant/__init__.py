"""Quantization as a module swap: int8 / int4 weight-only and W8A8 linears, presets by name,
and the perplexity gate that every quantized variant must pass."""

from warpserve.quant.linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear, W8A8Linear
from warpserve.quant.perplexity import (
    BUDGETS,
    AccuracyGateError,
    EvalConfig,
    GateReport,
    PerplexityResult,
    check_variant,
    gate,
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
    "W8A8Linear",
    "check_variant",
    "gate",
    "perplexity",
    "quantize_model",
    "select_linears",
]
