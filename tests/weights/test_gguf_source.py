"""GGUF files we write ourselves: names, un-permutation, config, raw blocks, and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T
from gguf import quants
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from tests.weights.conftest import (
    TinyGGUF,
    build_tiny_gguf,
    gguf_name,
    tiny_llama_config,
    write_gguf,
)
from warpserve.weights.dequant import dequantize
from warpserve.weights.loader import GGUFSource, open_model_source


def _open(path: Path) -> GGUFSource:
    source = open_model_source(str(path))
    assert isinstance(source, GGUFSource)
    return source


def _reference(tiny: TinyGGUF, hf_name: str) -> np.ndarray:
    """gguf-py's dequantization, un-permuted by Transformers' own GGUF code."""
    name = gguf_name(hf_name)
    ggml_type, data = tiny.raw[name]
    values = quants.dequantize(data.view(np.uint8), ggml_type)
    values = values.reshape(tiny.original[hf_name].shape)
    processor = LlamaTensorProcessor(tiny.config.to_dict())
    return processor.process(values, name).weights


def test_tensors_match_reference_dequant_and_unpermute(tiny_gguf: TinyGGUF) -> None:
    tensors = dict(_open(tiny_gguf.path).iter_tensors())
    assert set(tensors) == set(tiny_gguf.original)
    for name, tensor in tensors.items():
        assert tensor.dtype == torch.float32, name
        np.testing.assert_array_equal(tensor.numpy(), _reference(tiny_gguf, name), err_msg=name)


def test_exact_tensors_round_trip_through_permutation(tiny_gguf: TinyGGUF) -> None:
    """F32-stored Q/K come back as the HF originals: our un-permute inverts llama.cpp's."""
    tensors = dict(_open(tiny_gguf.path).iter_tensors())
    for name in (
        "model.layers.1.self_attn.q_proj.weight",
        "model.layers.1.self_attn.k_proj.weight",
    ):
        torch.testing.assert_close(tensors[name], tiny_gguf.original[name], rtol=0, atol=0)
    for name in ("model.norm.weight", "model.layers.0.input_layernorm.weight"):
        torch.testing.assert_close(tensors[name], tiny_gguf.original[name], rtol=0, atol=0)


def test_config_and_generation_config(tiny_gguf: TinyGGUF) -> None:
    source = _open(tiny_gguf.path)
    config, want = source.config, tiny_gguf.config
    assert source.format == "gguf"
    assert config.architectures == ["LlamaForCausalLM"]
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "vocab_size",
        "head_dim",
    ):
        assert getattr(config, key) == getattr(want, key), key
    assert config.rms_norm_eps == pytest.approx(want.rms_norm_eps)
    assert config.tie_word_embeddings is False  # output.weight is in the file
    # eos lists the end-of-turn token too: both stop a chat reply
    assert source.generation_config == {"bos_token_id": 0, "eos_token_id": [2, 0]}


def test_tied_embeddings_have_no_lm_head(tmp_path: Path) -> None:
    tiny = build_tiny_gguf(tmp_path / "tied.gguf", tie=True)
    source = _open(tiny.path)
    assert source.config.tie_word_embeddings is True
    assert "lm_head.weight" not in dict(source.iter_tensors())


def test_raw_tensors_keep_blocks_in_hf_row_order(tiny_gguf: TinyGGUF) -> None:
    source = _open(tiny_gguf.path)
    floats = dict(source.iter_tensors())
    raws = {raw.name: raw for raw in source.iter_raw_tensors()}
    assert set(raws) == set(floats)
    q = raws["model.layers.0.self_attn.q_proj.weight"]
    assert q.ggml_type == T.Q4_K and q.shape == (256, 256)
    assert q.data.dtype == np.uint8 and q.data.shape == (256, 144)  # one 144-byte block per row
    for raw in raws.values():
        values = dequantize(np.ascontiguousarray(raw.data).reshape(-1), raw.ggml_type, raw.shape)
        np.testing.assert_array_equal(values, floats[raw.name].numpy(), err_msg=raw.name)


def test_unsupported_quant_type_is_refused_at_open(tmp_path: Path) -> None:
    config = tiny_llama_config()
    tensors = {
        "token_embd.weight": (T.F32, np.zeros((96, 256), np.float32)),
        "blk.0.ffn_up.weight": (T.IQ4_NL, np.zeros((512, 256 // 32 * 18), np.uint8)),
    }
    write_gguf(tmp_path / "iq.gguf", config, tensors, with_tokenizer=False)
    with pytest.raises(ValueError, match=r"'blk\.0\.ffn_up\.weight'.*IQ4_NL"):
        open_model_source(str(tmp_path / "iq.gguf"))


def test_unknown_tensor_and_architecture_are_refused(tmp_path: Path) -> None:
    config = tiny_llama_config()
    tensors = {"blk.0.mystery.weight": (T.F32, np.zeros((4, 4), np.float32))}
    write_gguf(tmp_path / "odd.gguf", config, tensors, with_tokenizer=False)
    with pytest.raises(ValueError, match=r"odd\.gguf.*'blk\.0\.mystery\.weight'"):
        open_model_source(str(tmp_path / "odd.gguf"))
    write_gguf(tmp_path / "falcon.gguf", config, {}, architecture="falcon", with_tokenizer=False)
    with pytest.raises(ValueError, match=r"falcon\.gguf has architecture 'falcon'"):
        open_model_source(str(tmp_path / "falcon.gguf"))


def test_qwen2_rows_are_not_permuted(tmp_path: Path) -> None:
    """llama.cpp permutes Q/K for the Llama family only."""
    config = tiny_llama_config()
    q = np.random.default_rng(5).standard_normal((256, 256)).astype(np.float32)
    tensors = {
        "blk.0.attn_q.weight": (T.F32, q),
        "token_embd.weight": (T.F32, np.ones((96, 256), np.float32)),
    }
    write_gguf(tmp_path / "qwen.gguf", config, tensors, architecture="qwen2", with_tokenizer=False)
    source = _open(tmp_path / "qwen.gguf")
    assert source.config.architectures == ["Qwen2ForCausalLM"]
    np.testing.assert_array_equal(
        dict(source.iter_tensors())["model.layers.0.self_attn.q_proj.weight"], q
    )


@pytest.mark.parametrize("keep_fraction", [0.0, 0.0001, 0.05, 0.5, 0.999])
def test_truncated_file_names_the_file(
    tiny_gguf: TinyGGUF, tmp_path: Path, keep_fraction: float
) -> None:
    data = tiny_gguf.path.read_bytes()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(data[: int(len(data) * keep_fraction)])
    with pytest.raises(
        ValueError, match=r"broken\.gguf (is empty|is truncated or corrupt|is not a GGUF)"
    ):
        open_model_source(str(broken))


def test_not_a_gguf_file(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 definitely a zip file")
    with pytest.raises(ValueError, match=r"fake\.gguf is not a GGUF file"):
        open_model_source(str(fake))


def test_corrupt_tensor_type_id(tmp_path: Path) -> None:
    tiny = build_tiny_gguf(tmp_path / "ok.gguf")
    data = bytearray(tiny.path.read_bytes())
    # the tensor table entry of token_embd: name, n_dims=2, dims, then the u32 type id
    entry = data.index(b"token_embd.weight") + len(b"token_embd.weight") + 4 + 16
    data[entry : entry + 4] = (9999).to_bytes(4, "little")
    bad = tmp_path / "badtype.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"badtype\.gguf is truncated or corrupt.*type id 9999"):
        open_model_source(str(bad))
