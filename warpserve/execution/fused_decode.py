"""The fused decode backend: a whole decode step of the native Llama model in one C++ call.

`FusedDecoder.build(model, kv_caches)` hands the model's weights (fp32, or the int8 / int4
weight-only formats of quant/, read in place, no copy) and the K/V tensors to the extension
(layers/csrc/fused_decode.cpp) once; each decode-only step is then one call that returns the
logits of the sampled rows. Prefill chunks keep the eager path: they are large GEMMs, where
MKL is already at the CPU's peak. Nothing is traced or compiled per batch size, so there are
no recompiles and no buckets: the extension is built once per machine (cached on disk, see
layers/extensions.py) and takes any number of rows.

Models the extension cannot run exactly (another architecture, bfloat16, W8A8 activations,
an activation other than SiLU) get `None` and a reason, and the engine stays eager.

The repacked weights are placed by `execution/memory.py` (on 2 MB pages), through the
callback the extension calls for each one.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from warpserve.execution.inputs import StepInputs
from warpserve.execution.memory import on_huge_pages
from warpserve.layers import extensions

if TYPE_CHECKING:
    from warpserve.models.llama import LlamaDecoderLayer, LlamaForCausalLM

logger = logging.getLogger(__name__)

_F32, _I8, _I4 = 0, 1, 2


@functools.cache
def load_extension():
    return extensions.build("warpserve_fused_decode", "fused_decode.cpp")


class UnsupportedModel(ValueError):
    """The fused backend cannot run this model exactly as the eager path does."""


class FusedDecoder:
    def __init__(self, impl, vocab_size: int) -> None:
        self._impl = impl
        self.vocab_size = vocab_size

    @classmethod
    def build(
        cls, model: nn.Module, kv_caches: list[torch.Tensor], *, quiet: bool = False
    ) -> FusedDecoder | None:
        """The fused decoder for `model`, or None (logged; a warning unless `quiet`) when
        it cannot run the model exactly."""
        try:
            native = check_supported(model, kv_caches)
        except UnsupportedModel as err:
            log = logger.info if quiet else logger.warning
            log("fused decode unavailable, staying eager: %s", err)
            return None
        ext = load_extension()
        if ext is None:
            return None
        return cls(_assemble(ext, native, kv_caches), native.config.vocab_size)

    @torch.inference_mode()
    def __call__(self, inputs: StepInputs) -> torch.Tensor:
        """Runs every layer for the B decode rows, writes their K/V, returns the logits of
        `inputs.logit_rows`, [R, vocab]."""
        assert inputs.is_decode_only, "the fused decoder runs decode rows only"
        meta = inputs.meta
        return self._impl.forward(
            inputs.input_ids,  # [B] int64
            inputs.positions,  # [B] int64
            meta.slot_mapping,  # [B] int64
            meta.decode_block_tables,  # [B, max_blocks] int64
            meta.decode_context_lens,  # [B] int64, including each row's own token
            inputs.logit_rows,  # [R] int64
        )


def check_supported(model: nn.Module, kv_caches: list[torch.Tensor]) -> LlamaForCausalLM:
    """`model` as the native Llama the kernel runs, or UnsupportedModel saying why not."""
    from warpserve.models.llama import LlamaForCausalLM

    if not isinstance(model, LlamaForCausalLM):
        raise UnsupportedModel(f"{type(model).__name__} is not the native Llama model")
    act = getattr(model.config, "hidden_act", "silu")
    if act != "silu":
        raise UnsupportedModel(f"activation {act!r} (the kernel implements SiLU)")
    if model.embed_tokens.weight.dtype != torch.float32:
        raise UnsupportedModel(f"dtype {model.embed_tokens.weight.dtype} (the kernel is fp32)")
    if any(kv.dtype != torch.float32 or not kv.is_contiguous() for kv in kv_caches):
        raise UnsupportedModel("the KV cache must be contiguous float32")
    for name, module in model.named_modules():
        if _is_linear_leaf(module):
            _linear_args(module, name)  # raises on a format the kernel does not read
    return model


def _is_linear_leaf(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Linear)
        or hasattr(module, "weight_q")
        or hasattr(module, "weight_nibbles")
    )


def _linear_args(module: nn.Module, name: str) -> tuple:
    from warpserve.quant.linear import Int4WeightOnlyLinear, Int8WeightOnlyLinear, W8A8Linear
    from warpserve.quant.primitives import INT4_MID

    empty = torch.empty(0)
    bias = module.bias.detach() if isinstance(module.bias, torch.Tensor) else empty
    if type(module) is nn.Linear:
        weight = module.weight.detach()
        if weight.dtype != torch.float32:
            raise UnsupportedModel(f"{name}: dtype {weight.dtype}")
        return (_F32, weight, empty, empty, bias, 0)
    if isinstance(module, W8A8Linear):
        raise UnsupportedModel(f"{name}: W8A8 quantizes activations; the kernel keeps them fp32")
    if type(module) is Int8WeightOnlyLinear:
        return (_I8, module.weight_q, module.weight_scale, empty, bias, 0)
    if type(module) is Int4WeightOnlyLinear:
        offset = module.weight_zero - INT4_MID * module.weight_scale  # w = q * s + offset
        return (_I4, module.weight_nibbles, module.weight_scale, offset, bias, module.group_size)
    raise UnsupportedModel(f"{name}: {type(module).__name__} is not a format the kernel reads")


def _assemble(ext, model: LlamaForCausalLM, kv_caches: list[torch.Tensor]):
    config = model.config
    layers = cast("list[LlamaDecoderLayer]", list(model.layers))  # what the ModuleList holds
    first = layers[0].self_attn
    rotary = first.rotary
    impl = ext.FusedModel(
        config.hidden_size,
        first.num_heads,
        first.num_kv_heads,
        first.head_dim,
        config.intermediate_size,
        float(model.norm.eps),
        model.embed_tokens.weight.detach(),
        model.norm.weight.detach(),
        rotary.cos,
        rotary.sin,
    )

    def add(module: nn.Module, name: str) -> int:
        return impl.add_linear(*_linear_args(module, name), on_huge_pages)

    for i, (layer, kv) in enumerate(zip(layers, kv_caches, strict=True)):
        prefix = f"layers.{i}"
        impl.add_layer(
            layer.input_layernorm.weight.detach(),
            layer.post_attention_layernorm.weight.detach(),
            kv,
            add(layer.self_attn.qkv_proj, f"{prefix}.self_attn.qkv_proj"),
            add(layer.self_attn.o_proj, f"{prefix}.self_attn.o_proj"),
            add(layer.mlp.gate_up_proj, f"{prefix}.mlp.gate_up_proj"),
            add(layer.mlp.down_proj, f"{prefix}.mlp.down_proj"),
        )
    impl.set_lm_head(add(model.lm_head, "lm_head"))
    return impl
