"""llama.cpp measurements on a tiny GGUF (only where the `bench` extra is installed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from warpserve.bench import llamacpp
from warpserve.weights.gguf_file import read_gguf

pytest.importorskip("llama_cpp")


def _tiny_f32_gguf(path: Path) -> Path:
    """The loader tests' tiny Llama, all F32, with as many embedding rows as its tokenizer
    has tokens (llama.cpp checks that; warpserve's own loader does not need it)."""
    from gguf import GGMLQuantizationType as T

    from tests.weights import conftest as tiny

    config = tiny.tiny_llama_config(vocab_size=len(tiny.tokenizer_vocab()[0]))
    tensors = {}
    for hf_name, tensor in tiny.tiny_llama_state_dict(config).items():
        name, values = tiny.gguf_name(hf_name), tensor.numpy()
        if ".attn_q." in name:
            values = tiny.llama_cpp_permute(values, config.num_attention_heads)
        elif ".attn_k." in name:
            values = tiny.llama_cpp_permute(values, config.num_key_value_heads)
        tensors[name] = (T.F32, values.astype("float32"))
    tiny.write_gguf(path, config, tensors)
    return path


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llamacpp")
    source = _tiny_f32_gguf(folder / "tiny.gguf")
    return llamacpp.prepare_variants(source, ["Q4_0", "Q8_0"], folder / "cache", threads=1)


def test_variants_are_requantized_to_the_asked_type(variants):
    for name, variant in variants.items():
        metadata = read_gguf(Path(variant["path"])).metadata
        assert metadata["general.file_type"] == llamacpp.QUANT_TYPES[name]
        assert variant["requantized_from"] == "source" and variant["size_mb"] > 0


def test_single_and_batched_generate_every_token(variants):
    path = variants["Q8_0"]["path"]
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]]
    single = llamacpp.measure_single(path, prompts[:2], 4, threads=1)
    batched = llamacpp.measure_batched(path, prompts, 4, threads=1)
    assert single["generated_tokens"] == 2 * 4 and batched["generated_tokens"] == 3 * 4
    assert [len(t) for t in batched["token_ids"]] == [4, 4, 4]
    assert single["decode_tokens_per_s"] > 0 and single["ttft_s"]["p50"] > 0
    assert batched["generated_tokens_per_s"] > 0
    from tests.weights.conftest import tokenizer_vocab

    num_vocab = len(tokenizer_vocab()[0])
    assert all(0 <= t < num_vocab for ids in batched["token_ids"] for t in ids)


def test_perplexity_is_finite(variants):
    ppl = llamacpp.measure_perplexity(variants["Q8_0"]["path"], [list(range(3, 40))], threads=1)
    assert math.isfinite(ppl) and ppl > 1
