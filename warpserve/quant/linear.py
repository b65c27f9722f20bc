"""Quantized drop-in replacements for nn.Linear (the module swap of gpt-fast).

Each class is built from an existing nn.Linear with `from_linear`, keeps `in_features`,
`out_features` and `bias`, and picks its kernel per call from the number of tokens
(kernels.py). `kernel` may be set to a kernel name to force one (benchmarks, tests).
"""

from __future__ import annotations

import torch
from torch import nn

from warpserve.quant import kernels as K
from warpserve.quant.primitives import (
    INT4_MID,
    dequantize_int4_groupwise,
    dequantize_int8_per_channel,
    pack_int4,
    quantize_int4_groupwise,
    quantize_int8_per_channel,
    unpack_int4,
)

INT4_N_MULTIPLE = 16  # _convert_weight_to_int4pack_for_cpu packs output channels by 16
INT4_GROUP_SIZES = (32, 64, 128, 256)  # the group sizes the int4 kernel is built for


class QuantizedLinear(nn.Module):
    """Shared shape handling: [..., K] -> [M, K] -> kernel -> [..., N] (+ bias)."""

    kernels: tuple[str, ...] = ()

    def __init__(self, in_features: int, out_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), False)
        self.kernel: str | None = None  # None: choose by token count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)  # [M, K]
        name = self.kernel or self.choose_kernel(x2d.shape[0])
        y = self.matmul(x2d, name)  # [M, N]
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def choose_kernel(self, num_tokens: int) -> str:
        raise NotImplementedError

    def matmul(self, x: torch.Tensor, kernel: str) -> torch.Tensor:
        raise NotImplementedError

    def dequantized_weight(self) -> torch.Tensor:
        """[N, K] float32: the weight this module actually multiplies by."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8WeightOnlyLinear(QuantizedLinear):
    """int8 weights with one symmetric fp32 scale per output channel; float activations."""

    kernels = tuple(K.INT8_WO_KERNELS)
    weight_q: torch.Tensor  # buffers, registered in __init__
    weight_scale: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear.in_features, linear.out_features, linear.bias)
        q, scale = quantize_int8_per_channel(linear.weight)
        self.register_buffer("weight_q", q)  # [N, K] int8
        self.register_buffer("weight_scale", scale)  # [N] float32

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8WeightOnlyLinear:
        return cls(linear)

    def choose_kernel(self, num_tokens: int) -> str:
        return K.choose_int8_wo_kernel(num_tokens)

    def matmul(self, x: torch.Tensor, kernel: str) -> torch.Tensor:
        return K.INT8_WO_KERNELS[kernel](x, self.weight_q, self.weight_scale)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_int8_per_channel(self.weight_q, self.weight_scale)


class W8A8Linear(Int8WeightOnlyLinear):
    """int8 per-channel weights x int8 per-token dynamic activations, int32 accumulation.

    Calls with fewer than `min_act_quant_tokens` tokens keep float activations and run the
    weight-only kernel (the "int8-mixed" preset: decode is memory-bound, so quantizing its
    activations would cost accuracy and buy no speed). 1 quantizes activations always.
    """

    kernels = tuple(K.W8A8_KERNELS)

    def __init__(self, linear: nn.Linear, *, min_act_quant_tokens: int = 1) -> None:
        super().__init__(linear)
        if min_act_quant_tokens < 1:
            raise ValueError("min_act_quant_tokens must be >= 1")
        self.min_act_quant_tokens = min_act_quant_tokens
        self.fast_int_mm = K.has_fast_int_mm()

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, min_act_quant_tokens: int = 1) -> W8A8Linear:
        return cls(linear, min_act_quant_tokens=min_act_quant_tokens)

    def choose_kernel(self, num_tokens: int) -> str:
        if num_tokens < self.min_act_quant_tokens:
            return "wo:" + K.choose_int8_wo_kernel(num_tokens)
        return K.choose_w8a8_kernel(num_tokens, fast_int_mm=self.fast_int_mm)

    def matmul(self, x: torch.Tensor, kernel: str) -> torch.Tensor:
        if kernel.startswith("wo:"):  # weight-only path, see min_act_quant_tokens
            return super().matmul(x, kernel.removeprefix("wo:"))
        return K.W8A8_KERNELS[kernel](x, self.weight_q, self.weight_scale)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, min_act_quant_tokens={self.min_act_quant_tokens}"


class Int4WeightOnlyLinear(QuantizedLinear):
    """4-bit weights, one (scale, zero) pair per `group_size` inputs; see primitives.py.

    Holds the weight twice at 4 bits: in the fused kernel's packed layout (decode) and as
    plain nibbles for the dequantize path (large M) and for state dicts.
    """

    kernels = K.INT4_KERNELS
    weight_nibbles: torch.Tensor  # buffers, registered in __init__
    weight_scale: torch.Tensor
    weight_zero: torch.Tensor
    weight_packed: torch.Tensor
    scale_zero_bf16: torch.Tensor

    def __init__(self, linear: nn.Linear, *, group_size: int = 32, symmetric: bool = False):
        super().__init__(linear.in_features, linear.out_features, linear.bias)
        check_int4_shape(linear, group_size)
        self.group_size = group_size
        self.symmetric = symmetric
        q, scale, zero = quantize_int4_groupwise(linear.weight, group_size, symmetric=symmetric)
        self.register_buffer("weight_nibbles", pack_int4(q))  # [N, K/2] uint8
        self.register_buffer("weight_scale", scale)  # [N, K/G] float32
        self.register_buffer("weight_zero", zero)  # [N, K/G] float32
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
        self.register_buffer("weight_packed", packed)  # [N, K/2] uint8, kernel layout
        scale_zero = torch.stack([scale.t(), zero.t()], dim=-1)  # [K/G, N, 2]
        self.register_buffer("scale_zero_bf16", scale_zero.to(torch.bfloat16).contiguous())

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, group_size: int = 32, symmetric: bool = False):
        return cls(linear, group_size=group_size, symmetric=symmetric)

    def choose_kernel(self, num_tokens: int) -> str:
        return K.choose_int4_kernel(num_tokens)

    def matmul(self, x: torch.Tensor, kernel: str) -> torch.Tensor:
        if kernel == "dequant_fp32":
            offset = self.weight_zero - INT4_MID * self.weight_scale  # [N, K/G]
            return K.int4_dequant(x, self.weight_nibbles, self.weight_scale, offset)
        fused = K.int4_tinygemm_bf16 if kernel == "tinygemm_bf16" else K.int4_tinygemm_fp32
        return fused(x, self.weight_packed, self.scale_zero_bf16, self.group_size)

    def dequantized_weight(self) -> torch.Tensor:
        q = unpack_int4(self.weight_nibbles)
        return dequantize_int4_groupwise(q, self.weight_scale, self.weight_zero)

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        return f"{super().extra_repr()}, group_size={self.group_size}, {kind}"


def check_int4_shape(linear: nn.Linear, group_size: int) -> None:
    """Raise ValueError when the packed int4 kernel cannot take this layer."""
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    if linear.in_features % group_size:
        raise ValueError(
            f"in_features {linear.in_features} is not a multiple of group_size {group_size}; "
            "pick a group size that divides it (e.g. 32 or 64 for 576) or exclude the layer"
        )
    if linear.out_features % INT4_N_MULTIPLE:
        raise ValueError(
            f"out_features {linear.out_features} is not a multiple of {INT4_N_MULTIPLE}, "
            "which the packed int4 kernel needs; exclude the layer"
        )
