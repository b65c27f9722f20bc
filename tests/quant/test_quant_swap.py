"""quantize_model: which layers get swapped, the tied LM head, and end-to-end closeness."""

import copy
import logging

import pytest
import torch
from torch import nn

from warpserve.quant import (
    Int4WeightOnlyLinear,
    Int8WeightOnlyLinear,
    W8A8Linear,
    quantize_model,
)
from warpserve.quant import kernels as K

VOCAB, HIDDEN, INTERMEDIATE = 64, 64, 128


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv_proj = nn.Linear(HIDDEN, 3 * HIDDEN, bias=False)
        self.o_proj = nn.Linear(3 * HIDDEN, HIDDEN, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(HIDDEN, INTERMEDIATE), nn.SiLU(), nn.Linear(INTERMEDIATE, HIDDEN)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.o_proj(self.qkv_proj(x))
        return x + self.mlp(x)


class TinyLM(nn.Module):
    """embed -> 2 blocks -> lm_head, with lm_head.weight tied to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed_tokens = nn.Embedding(VOCAB, HIDDEN)
        self.layers = nn.ModuleList([Block(), Block()])
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.lm_head.weight = self.embed_tokens.weight
        self.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(ids) * 0.5
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(x)


def linear_types(model: nn.Module) -> dict[str, type]:
    kinds = (nn.Linear, Int8WeightOnlyLinear, Int4WeightOnlyLinear)
    return {name: type(m) for name, m in model.named_modules() if isinstance(m, kinds)}


@pytest.mark.parametrize(("scheme", "cls"), [("int8", Int8WeightOnlyLinear), ("w8a8", W8A8Linear)])
def test_swaps_every_linear(scheme, cls):
    model = quantize_model(TinyLM(), scheme)
    types = linear_types(model)
    assert len(types) == 9 and set(types.values()) == {cls}


def test_include_and_exclude_filter_by_name():
    model = quantize_model(
        TinyLM(), "int8", include=["layers.*.mlp.*", "lm_head"], exclude=["layers.1.*"]
    )
    swapped = {n for n, t in linear_types(model).items() if t is Int8WeightOnlyLinear}
    assert swapped == {"layers.0.mlp.0", "layers.0.mlp.2", "lm_head"}
    assert type(model.layers[1].mlp[0]) is nn.Linear and type(model.layers[0].o_proj) is nn.Linear


def test_int4_preset_keeps_lm_head_at_int8():
    types = linear_types(quantize_model(TinyLM(), "int4"))
    assert types.pop("lm_head") is Int8WeightOnlyLinear
    assert set(types.values()) == {Int4WeightOnlyLinear}


def test_int4_leaves_unpackable_layers_in_float(caplog):
    model = TinyLM()
    model.layers[0].odd = nn.Linear(HIDDEN, 8)  # 8 outputs: not a multiple of 16
    with caplog.at_level(logging.WARNING):
        quantize_model(model, "int4")
    assert type(model.layers[0].odd) is nn.Linear
    assert "layers.0.odd" in caplog.text


def test_tied_lm_head_leaves_embedding_exact():
    model = TinyLM()
    table = model.embed_tokens.weight.clone()
    ids = torch.tensor([[1, 5, 9, 63]])
    reference = model(ids)
    quantize_model(model, "int8")
    assert torch.equal(model.embed_tokens.weight, table)  # lookups stay exact
    assert isinstance(model.embed_tokens.weight, nn.Parameter)
    assert float((model(ids) - reference).norm() / reference.norm()) < 0.01


@pytest.mark.parametrize(
    ("scheme", "bound"), [("int8", 0.01), ("w8a8", 0.02), ("int8-mixed", 0.02), ("int4", 0.15)]
)
def test_quantized_model_logits_close_to_fp32(scheme, bound):
    model = TinyLM()
    ids = torch.randint(0, VOCAB, (2, 24))
    reference = model(ids)
    logits = quantize_model(copy.deepcopy(model), scheme)(ids)
    assert float((logits - reference).norm() / reference.norm()) < bound


@pytest.mark.parametrize("fast", [False, True])
def test_int8_mixed_quantizes_activations_only_with_fast_int_mm(monkeypatch, fast):
    monkeypatch.setattr(K, "has_fast_int_mm", lambda: fast)
    head = quantize_model(TinyLM(), "int8-mixed").lm_head
    if not fast:
        assert type(head) is Int8WeightOnlyLinear
        return
    assert type(head) is W8A8Linear and head.min_act_quant_tokens == K.FUSED_MAX_TOKENS + 1
    assert head.choose_kernel(1).startswith("wo:")
    assert head.choose_kernel(64) == "int_mm"


def test_unknown_scheme_names_the_choices():
    with pytest.raises(ValueError, match="int8, int4, w8a8, int8-mixed"):
        quantize_model(TinyLM(), "int3")


@pytest.mark.parametrize(("scheme", "bound"), [("int8", 0.01), ("w8a8", 0.03), ("int4", 0.15)])
def test_native_llama_swaps_fused_projections(scheme, bound):
    from transformers import LlamaConfig

    from tests.models.helpers import prefill_logits
    from warpserve.models.llama import LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config, max_positions=64).eval()
    ids = list(range(3, 40))
    reference = prefill_logits(model, ids)
    table = model.embed_tokens.weight.clone()
    quantize_model(model, scheme)
    names = {
        n
        for n, m in model.named_modules()
        if isinstance(m, Int8WeightOnlyLinear | Int4WeightOnlyLinear)
    }
    assert {"layers.0.self_attn.qkv_proj", "layers.1.mlp.gate_up_proj", "lm_head"} <= names
    assert torch.equal(model.embed_tokens.weight, table)
    logits = prefill_logits(model, ids)
    assert float((logits - reference).norm() / reference.norm()) < bound
