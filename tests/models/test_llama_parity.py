"""The native Llama-family model against Transformers on tiny random-init configs.

Tolerance: fp32 logits within atol 1e-4 / rtol 1e-4 of Transformers' (in practice the
difference is 0 or a few ulps: the same ops in the same order, q/k/v fused).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from tests.models.helpers import prefill_logits
from warpserve.models.llama import LlamaForCausalLM
from warpserve.models.registry import native_class

BASE = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=512,
)

CASES = {
    "mha": (LlamaConfig, dict(num_key_value_heads=4)),
    "gqa": (LlamaConfig, dict(num_key_value_heads=2)),
    "mqa": (LlamaConfig, dict(num_key_value_heads=1)),
    "tied": (LlamaConfig, dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "attention_bias": (LlamaConfig, dict(num_key_value_heads=2, attention_bias=True)),
    "head_dim": (LlamaConfig, dict(num_key_value_heads=2, head_dim=32)),
    "rope_linear": (
        LlamaConfig,
        dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
    ),
    "rope_llama3": (
        LlamaConfig,
        dict(
            rope_parameters={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 128,
                "rope_theta": 500000.0,
            }
        ),
    ),
    "rope_yarn": (
        LlamaConfig,
        dict(
            rope_parameters={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 128,
                "rope_theta": 10000.0,
            }
        ),
    ),
    "qwen2_bias": (Qwen2Config, dict(num_key_value_heads=2, tie_word_embeddings=False)),
    "mistral": (MistralConfig, dict(num_key_value_heads=2, sliding_window=None)),
}


def build_pair(case: str, seed: int = 0):
    config_cls, extra = CASES[case]
    config = config_cls(**{**BASE, **extra})
    config.architectures = [config_cls.__name__.replace("Config", "ForCausalLM")]
    torch.manual_seed(seed)
    reference = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    model = native_class(config)(config, config.max_position_embeddings)
    model.load_weights(reference.state_dict().items())
    return reference, model.eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case: str) -> None:
    reference, model = build_pair(case)
    ids = torch.randint(0, BASE["vocab_size"], (45,), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(ids[None]).logits[0]
    actual = prefill_logits(model, ids.tolist())
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_bias_present_only_where_config_says() -> None:
    _, qwen = build_pair("qwen2_bias")
    assert qwen.layers[0].self_attn.qkv_proj.bias is not None
    assert qwen.layers[0].self_attn.o_proj.bias is None
    _, llama = build_pair("gqa")
    assert llama.layers[0].self_attn.qkv_proj.bias is None


def test_tied_head_shares_the_embedding() -> None:
    _, model = build_pair("tied")
    assert model.lm_head.weight.data_ptr() == model.embed_tokens.weight.data_ptr()


def test_missing_weight_is_reported() -> None:
    reference, _ = build_pair("gqa")
    config = reference.config
    model = LlamaForCausalLM(config, 64)
    state = {k: v for k, v in reference.state_dict().items() if "layers.1.mlp.up_proj" not in k}
    with pytest.raises(ValueError, match="missing"):
        model.load_weights(state.items())


def test_shape_mismatch_names_the_weight() -> None:
    reference, model = build_pair("gqa")
    state = dict(reference.state_dict())
    state["model.norm.weight"] = torch.ones(3)
    with pytest.raises(ValueError, match="model.norm.weight"):
        model.load_weights(state.items())


def test_dynamic_rope_is_refused() -> None:
    config = LlamaConfig(
        **BASE, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}
    )
    with pytest.raises(ValueError, match="dynamic"):
        LlamaForCausalLM(config, 64)
