"""quantize_model: replace nn.Linear modules by quantized ones, chosen by name.

Presets (the `scheme` argument):
- "int8": Int8WeightOnlyLinear everywhere. Decode reads 4x fewer weight bytes.
- "int4": Int4WeightOnlyLinear (group-wise, `group_size` 32 by default, asymmetric unless
  `symmetric`), except the layers matching `INT4_HIGHER_PRECISION` (the LM head), which get
  int8 as llama.cpp's Q4 files do: on SmolLM2-135M an int4 LM head alone costs +5.1%
  perplexity (docs/ARCHITECTURE.md, "Quantization kernels").
- "w8a8": W8A8Linear everywhere, activations quantized per token at every batch size.
- "int8-mixed": int8 weights; activations are quantized only for calls of more than
  kernels.FUSED_MAX_TOKENS tokens and only on CPUs where the int8 GEMM is fast (VNNI).
  Decode keeps float activations (memory-bound: quantizing them costs accuracy and buys no
  speed); without VNNI this is the same as "int8".

Tied LM head: the quantized lm_head holds its own quantized copy of the weight; the input
embedding keeps the original float table, so embedding lookups stay exact. The tie is
broken on purpose (the embedding gathers one row per token, so its precision is free).
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator, Sequence

from torch import nn

from warpserve.config import QUANTIZATION_PRESETS
from warpserve.quant import kernels as K
from warpserve.quant.linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear, W8A8Linear

logger = logging.getLogger(__name__)

SCHEMES = tuple(p for p in QUANTIZATION_PRESETS if p != "none")  # what quantize_model takes
INT4_HIGHER_PRECISION = ("lm_head",)  # name patterns that "int4" quantizes to int8 instead


def quantize_model(
    model: nn.Module,
    scheme: str,
    *,
    group_size: int = 32,
    symmetric: bool = False,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> nn.Module:
    """Swap the selected nn.Linear modules of `model` in place and return it.

    include / exclude: fnmatch patterns over qualified module names ("lm_head",
    "*.mlp.*", "model.layers.0.*"); None includes every nn.Linear, exclude wins.
    group_size / symmetric: int4 only (see primitives.py for the format).
    """
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown quantization scheme '{scheme}'; choose one of {', '.join(SCHEMES)}"
        )
    for name, linear in list(select_linears(model, include, exclude)):
        try:
            swapped = _replacement(scheme, name, linear, group_size, symmetric)
        except ValueError as err:  # a shape the kernel cannot take: keep the layer float
            logger.warning("quantize_model: keeping %s in float: %s", name, err)
            continue
        model.set_submodule(name, swapped)
    return model


def select_linears(
    model: nn.Module, include: Sequence[str] | None, exclude: Sequence[str]
) -> Iterator[tuple[str, nn.Linear]]:
    """(qualified name, module) of each nn.Linear passing the name filters."""
    for name, module in model.named_modules():
        if type(module) is not nn.Linear:  # exact type: subclasses may do more than a matmul
            continue
        if include is not None and not _matches(name, include):
            continue
        if _matches(name, exclude):
            continue
        yield name, module


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _replacement(
    scheme: str, name: str, linear: nn.Linear, group_size: int, symmetric: bool
) -> nn.Module:
    if scheme == "w8a8":
        return W8A8Linear.from_linear(linear)
    if scheme == "int8-mixed" and K.has_fast_int_mm():
        return W8A8Linear.from_linear(linear, min_act_quant_tokens=K.FUSED_MAX_TOKENS + 1)
    if scheme == "int4" and not _matches(name, INT4_HIGHER_PRECISION):
        return Int4WeightOnlyLinear.from_linear(linear, group_size=group_size, symmetric=symmetric)
    return Int8WeightOnlyLinear.from_linear(linear)  # int8, int8-mixed without VNNI, int4's head
