"""Hugging Face folders: tiny random Llama models saved with `save_pretrained` load back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.weights.conftest import CHAT_TEMPLATE, SPECIAL_TOKENS, tiny_llama_config
from warpserve.weights.loader import SafetensorsSource, open_model_source
from warpserve.weights.registry import ModelNotFoundError


def _save_tiny_llama(folder: Path, **save_kwargs) -> dict[str, torch.Tensor]:
    from transformers import GenerationConfig, LlamaForCausalLM

    config = tiny_llama_config(hidden_size=64, intermediate_size=128)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, **save_kwargs)
    GenerationConfig(bos_token_id=0, eos_token_id=[2, 1]).save_pretrained(folder)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _save_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=280,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["hello world " * 4], trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", bos_token="<|endoftext|>", model_max_length=64
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(folder)


def _open(folder: Path) -> SafetensorsSource:
    source = open_model_source(str(folder))
    assert isinstance(source, SafetensorsSource)
    return source


def test_single_file_round_trip(tmp_path: Path) -> None:
    expected = _save_tiny_llama(tmp_path)
    source = _open(tmp_path)
    assert source.format == "safetensors"
    assert source.config.architectures == ["LlamaForCausalLM"]
    assert source.generation_config["eos_token_id"] == [2, 1]
    tensors = dict(source.iter_tensors())
    assert set(tensors) == set(expected)  # untied: lm_head.weight is there
    for name, tensor in tensors.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


def test_sharded_round_trip(tmp_path: Path) -> None:
    expected = _save_tiny_llama(tmp_path, max_shard_size="100KB")
    source = _open(tmp_path)
    assert len(source.shards) > 1
    tensors = dict(source.iter_tensors())
    assert set(tensors) == set(expected)
    for name, tensor in tensors.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0)


def test_bfloat16_checkpoint_comes_as_float32(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    _save_tiny_llama(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    weight = torch.randn(8, 8).to(torch.bfloat16)
    save_file({"model.embed_tokens.weight": weight}, str(tmp_path / "model.safetensors"))
    ((name, tensor),) = _open(tmp_path).iter_tensors()
    assert tensor.dtype == torch.float32
    torch.testing.assert_close(tensor, weight.float(), rtol=0, atol=0)


def test_tokenizer_from_folder(tmp_path: Path) -> None:
    _save_tiny_llama(tmp_path)
    _save_tokenizer(tmp_path)
    tokenizer = _open(tmp_path).load_tokenizer()
    vocab = tokenizer.hf.get_vocab()
    ids = tokenizer.encode("hello world")
    assert tokenizer.decode(ids) == "hello world"
    # the tokenizer's eos, and the generation_config's [2, 1]
    assert tokenizer.eos_token_ids == {vocab["<|im_end|>"], 2, 1}
    assert tokenizer.max_model_len == 64  # the tokenizer's limit is below the config's 128
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}]).endswith(
        "assistant\n"
    )


def test_folder_without_config(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} has no config\.json"):
        open_model_source(str(tmp_path))


def test_folder_without_weights(tmp_path: Path) -> None:
    _save_tiny_llama(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        open_model_source(str(tmp_path))


def test_truncated_shard_names_the_file(tmp_path: Path) -> None:
    _save_tiny_llama(tmp_path, max_shard_size="100KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ValueError, match=rf"{shard.name} is truncated or corrupt"):
        open_model_source(str(tmp_path))


def test_index_naming_a_missing_shard(tmp_path: Path) -> None:
    _save_tiny_llama(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    missing = sorted(set(index["weight_map"].values()))[0]
    (tmp_path / missing).unlink()
    with pytest.raises(FileNotFoundError, match=rf"missing: {missing}"):
        open_model_source(str(tmp_path))


def test_bad_config_json(tmp_path: Path) -> None:
    _save_tiny_llama(tmp_path)
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"config\.json is not a usable model config"):
        open_model_source(str(tmp_path))


def test_missing_path_and_hub_id() -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        open_model_source("/nonexistent/model.gguf")
    with pytest.raises(ModelNotFoundError, match="Hugging Face Hub id"):
        open_model_source("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_plain_file_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt is neither a model folder nor a \.gguf"):
        open_model_source(str(tmp_path / "notes.txt"))
