"""The bundled models against Transformers' own loaders (slow: Transformers' GGUF path ~30 s)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from warpserve.weights.loader import GGUFSource, SafetensorsSource, open_model_source
from warpserve.weights.registry import ModelNotFoundError, resolve_model_path

pytestmark = pytest.mark.integration

TEXTS = [
    "Hello world!",
    "  leading spaces\nand a new line  ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>",
    "ünïcödé, 日本語 and emoji 🤖",
    "def f(x):\n\treturn x ** 2",
]


def _bundled(name: str) -> Path:
    try:
        return resolve_model_path(name)
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def smollm2() -> GGUFSource:
    _bundled("smollm2-135m-instruct")
    source = open_model_source("smollm2-135m-instruct")
    assert isinstance(source, GGUFSource)
    return source


@pytest.mark.slow
def test_smollm2_state_dict_equals_transformers(smollm2: GGUFSource) -> None:
    from transformers import AutoModelForCausalLM

    started = time.perf_counter()
    ours = dict(smollm2.iter_tensors())
    seconds = time.perf_counter() - started
    reference = AutoModelForCausalLM.from_pretrained(
        str(smollm2.path.parent), gguf_file=smollm2.path.name, dtype=torch.float32
    )
    expected = reference.state_dict()
    assert smollm2.config.tie_word_embeddings and reference.config.tie_word_embeddings
    assert set(ours) == set(expected) - {"lm_head.weight"}  # tied: the embedding is the head
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6, msg=name)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "max_position_embeddings", "rms_norm_eps",
                "head_dim", "rope_parameters"):  # fmt: skip
        assert getattr(smollm2.config, key) == getattr(reference.config, key), key
    assert seconds < 30, f"dequantizing took {seconds:.1f} s"  # Transformers: ~25 s here


@pytest.mark.slow
def test_smollm2_tokenizer_equals_transformers(smollm2: GGUFSource, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = smollm2.load_tokenizer(cache_dir=tmp_path)
    cached = smollm2.load_tokenizer(cache_dir=tmp_path)
    reference = AutoTokenizer.from_pretrained(str(smollm2.path.parent), gguf_file=smollm2.path.name)
    for text in TEXTS:
        assert tokenizer.encode(text) == reference.encode(text), text
        assert cached.encode(text) == reference.encode(text), text
    assert tokenizer.eos_token_ids == {reference.convert_tokens_to_ids("<|im_end|>")}
    prompt = cached.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert prompt == reference.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


def test_all_minilm_folder() -> None:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    folder = _bundled("all-minilm-l6-v2")
    source = open_model_source("all-minilm-l6-v2")
    assert isinstance(source, SafetensorsSource)
    assert source.config.architectures == ["BertModel"]
    expected = load_file(str(folder / "model.safetensors"))
    ours = dict(source.iter_tensors())
    assert set(ours) == set(expected)
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)
    tokenizer = source.load_tokenizer()
    reference = AutoTokenizer.from_pretrained(str(folder))
    for text in TEXTS:
        assert tokenizer.encode(text) == reference.encode(text), text
    assert tokenizer.max_model_len == 512
    assert not tokenizer.has_chat_template
