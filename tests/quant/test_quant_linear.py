"""Each quantized linear against fp32 nn.Linear, on tiny shapes.

Error bounds are relative Frobenius norms ||y - y_ref|| / ||y_ref|| for Gaussian weights and
activations: about 0.4% for int8 per-channel (step = absmax / 127), about 0.6% when the
activations are int8 too, about 6% for int4 with groups of 32 (16 levels per group). The
bounds below leave ~2x headroom. Against the module's own dequantized weight the kernels are
exact in fp32 and within bf16 activation rounding (2^-9 relative) otherwise.
"""

import pytest
import torch
from torch import nn

from warpserve.quant import Int4WeightOnlyLinear, Int8WeightOnlyLinear, W8A8Linear
from warpserve.quant import kernels as K
from warpserve.quant.linear import check_int4_shape
from warpserve.quant.primitives import (
    dequantize_int4_groupwise,
    dequantize_int8_per_channel,
    pack_int4,
    quantize_int4_groupwise,
    quantize_int8_per_channel,
    unpack_int4,
)

BOUND_VS_FP32 = {Int8WeightOnlyLinear: 0.01, W8A8Linear: 0.015, Int4WeightOnlyLinear: 0.12}
CASES = [(cls, kernel) for cls in BOUND_VS_FP32 for kernel in cls.kernels]


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).norm() / ref.norm())


def make_linear(n: int = 48, k: int = 96, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(k, n, bias=bias).requires_grad_(False)


@pytest.mark.parametrize(("cls", "kernel"), CASES)
@pytest.mark.parametrize("num_tokens", [1, 5, 40])
def test_kernel_matches_fp32_within_scheme_bound(cls, kernel, num_tokens):
    linear = make_linear()
    module = cls.from_linear(linear)
    module.kernel = kernel
    x = torch.randn(2, num_tokens, 96)  # [B, T, K]: leading dims are flattened and restored
    y = module(x)
    assert y.shape == (2, num_tokens, 48) and y.dtype == torch.float32
    assert rel_err(y, linear(x)) < BOUND_VS_FP32[cls]
    exact = nn.functional.linear(x, module.dequantized_weight(), linear.bias)
    # bf16 enters through the activations (*_bf16) or the int4 kernel's bf16 scale/zero table
    kernel_tol = 1e-5 if kernel in ("dequant_fp32", "int8pack_fp32") else 0.01
    if cls is not W8A8Linear:  # W8A8 also rounds activations, covered by the bound above
        assert rel_err(y, exact) < kernel_tol


@pytest.mark.parametrize("cls", list(BOUND_VS_FP32))
def test_default_kernel_choice_runs_for_decode_and_prefill(cls):
    linear = make_linear(bias=False)
    module = cls.from_linear(linear)
    for num_tokens in (1, K.FUSED_MAX_TOKENS, K.FUSED_MAX_TOKENS + 1, 64):
        x = torch.randn(num_tokens, 96)
        assert rel_err(module(x), linear(x)) < BOUND_VS_FP32[cls]


def test_int8_round_trip_within_half_step_and_idempotent():
    w = torch.randn(32, 64)
    q, scale = quantize_int8_per_channel(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
    w_hat = dequantize_int8_per_channel(q, scale)
    assert torch.all((w - w_hat).abs() <= scale[:, None] / 2 + 1e-7)
    q2, scale2 = quantize_int8_per_channel(w_hat)
    assert torch.equal(q, q2) and torch.allclose(scale, scale2)


@pytest.mark.parametrize("symmetric", [False, True])
def test_int4_round_trip_within_half_step(symmetric):
    w = torch.randn(16, 128) + 0.5  # skewed groups: asymmetric uses all 16 levels
    q, scale, zero = quantize_int4_groupwise(w, 32, symmetric=symmetric)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15
    if symmetric:
        assert torch.all(zero == 0)
    w_hat = dequantize_int4_groupwise(q, scale, zero)
    step = scale.repeat_interleave(32, dim=1)  # [N, K]
    assert torch.all((w - w_hat).abs() <= step / 2 + 1e-6)
    assert torch.equal(unpack_int4(pack_int4(q)), q)


def test_int4_asymmetric_beats_symmetric_on_skewed_weights():
    w = torch.rand(16, 128)  # all positive: symmetric wastes the negative half
    errs = [
        float((w - dequantize_int4_groupwise(*quantize_int4_groupwise(w, 32, symmetric=s))).norm())
        for s in (False, True)
    ]
    assert errs[0] < errs[1]


def test_w8a8_scales_activations_per_token():
    linear = make_linear(bias=False)
    module = W8A8Linear.from_linear(linear)
    x = torch.randn(4, 96)
    y = module(x)
    x_loud = x.clone()
    x_loud[0] *= 1000.0  # a per-tensor scale would crush the other rows' resolution
    y_loud = module(x_loud)
    torch.testing.assert_close(y_loud[1:], y[1:], rtol=0, atol=0)
    torch.testing.assert_close(y_loud[0], 1000.0 * y[0], rtol=1e-4, atol=1e-3)


def test_w8a8_below_min_tokens_is_weight_only():
    linear = make_linear(bias=False)
    mixed = W8A8Linear.from_linear(linear, min_act_quant_tokens=8)
    weight_only = Int8WeightOnlyLinear.from_linear(linear)
    x = torch.randn(3, 96)
    assert mixed.choose_kernel(3).startswith("wo:")
    torch.testing.assert_close(mixed(x), weight_only(x), rtol=0, atol=0)
    assert not mixed.choose_kernel(8).startswith("wo:")


@pytest.mark.parametrize("num_tokens", [1, 3, 17, 24])
def test_int_mm_shapes_on_cpu_are_exact(num_tokens):
    # CUDA's _int_mm needs M > 16 and K, N multiples of 8; the CPU op takes any M.
    a = torch.randint(-127, 128, (num_tokens, 96), dtype=torch.int8)
    b = torch.randint(-127, 128, (48, 96), dtype=torch.int8)
    ref = a.long() @ b.long().t()
    assert torch.equal(torch._int_mm(a, b.t()).long(), ref)


def test_int4_rejects_shapes_the_kernel_cannot_pack():
    with pytest.raises(ValueError, match="multiple of group_size"):
        check_int4_shape(nn.Linear(48, 32), 32)
    with pytest.raises(ValueError, match="multiple of 16"):
        check_int4_shape(nn.Linear(64, 40), 32)
    with pytest.raises(ValueError, match="group_size must be one of"):
        check_int4_shape(nn.Linear(64, 32), 48)


@pytest.mark.parametrize("cls", list(BOUND_VS_FP32))
def test_dequant_path_is_exact_across_row_chunks(monkeypatch, cls):
    monkeypatch.setattr(K, "DEQUANT_CHUNK_ROWS", 16)  # 48 rows -> 3 chunks
    linear = make_linear(bias=False)
    module = cls.from_linear(linear)
    module.kernel = "dequant_fp32"
    x = torch.randn(7, 96)
    if cls is W8A8Linear:
        monkeypatch.setattr(K, "DEQUANT_CHUNK_ROWS", 1024)
        whole = module(x)
        monkeypatch.setattr(K, "DEQUANT_CHUNK_ROWS", 16)
        torch.testing.assert_close(module(x), whole)
        return
    exact = nn.functional.linear(x, module.dequantized_weight())
    torch.testing.assert_close(module(x), exact, rtol=1e-5, atol=1e-5)
