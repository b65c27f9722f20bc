"""A GGUF file's tokenizer: same ids as Transformers' GGUF tokenizer, converted once, cached."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.weights.conftest import CHAT_TEMPLATE, TinyGGUF
from warpserve.tokenization import gguf_convert
from warpserve.weights.loader import open_model_source

TEXTS = ["hello world", "  hello, tokens.\n", "<|im_start|>user\nhi<|im_end|>", "ünïcode 🙂"]


def test_encodes_like_transformers_gguf_tokenizer(tiny_gguf: TinyGGUF, tmp_path: Path) -> None:
    tokenizer = open_model_source(str(tiny_gguf.path)).load_tokenizer(cache_dir=tmp_path)
    reference = AutoTokenizer.from_pretrained(
        str(tiny_gguf.path.parent), gguf_file=tiny_gguf.path.name
    )
    for text in TEXTS:
        assert tokenizer.encode(text) == reference.encode(text), text
        ids = reference.encode(text)
        for skip in (True, False):
            assert tokenizer.decode(ids, skip) == reference.decode(ids, skip_special_tokens=skip)
    assert tokenizer.hf.chat_template == CHAT_TEMPLATE
    vocab = tokenizer.hf.get_vocab()
    assert tokenizer.eos_token_ids == {vocab["<|im_end|>"], vocab["<|endoftext|>"]}
    assert tokenizer.bos_token_id == vocab["<|endoftext|>"]
    assert tokenizer.max_model_len == tiny_gguf.config.max_position_embeddings
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_second_load_comes_from_the_disk_cache(
    tiny_gguf: TinyGGUF, tmp_path: Path, monkeypatch
) -> None:
    source = open_model_source(str(tiny_gguf.path))
    first = source.load_tokenizer(cache_dir=tmp_path)
    entries = list((tmp_path / "tokenizers").iterdir())
    assert len(entries) == 1 and (entries[0] / "tokenizer.json").is_file()

    def no_conversion(path):
        raise AssertionError(f"converted {path} again instead of using the cache")

    monkeypatch.setattr(gguf_convert, "convert_gguf_tokenizer", no_conversion)
    second = source.load_tokenizer(cache_dir=tmp_path)
    for text in TEXTS:
        assert second.encode(text) == first.encode(text)
    assert second.hf.chat_template == first.hf.chat_template
    assert second.eos_token_ids == first.eos_token_ids


def test_cache_dir_comes_from_the_environment(
    tiny_gguf: TinyGGUF, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("WARPSERVE_CACHE_DIR", str(tmp_path / "from-env"))
    open_model_source(str(tiny_gguf.path)).load_tokenizer()
    assert len(list((tmp_path / "from-env" / "tokenizers").iterdir())) == 1


@pytest.mark.parametrize("damage", ["missing_json", "garbage_json"])
def test_damaged_cache_entry_is_rebuilt(tiny_gguf: TinyGGUF, tmp_path: Path, damage: str) -> None:
    source = open_model_source(str(tiny_gguf.path))
    expected = source.load_tokenizer(cache_dir=tmp_path).encode("hello world")
    (entry,) = (tmp_path / "tokenizers").iterdir()
    if damage == "missing_json":
        (entry / "tokenizer.json").unlink()
    else:
        (entry / "tokenizer_config.json").write_text("{not json")
    assert source.load_tokenizer(cache_dir=tmp_path).encode("hello world") == expected
    assert (entry / "tokenizer.json").is_file()
