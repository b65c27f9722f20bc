"""The on-disk cache of converted GGUF tokenizers: keys, reuse and eviction."""

from __future__ import annotations

import os
from pathlib import Path

from tests.tokenization.conftest import make_hf_tokenizer
from warpserve.tokenization import gguf_convert
from warpserve.tokenization.gguf_convert import cache_key, evict_oldest, load_gguf_tokenizer


def _fake_converter(monkeypatch) -> list[Path]:
    converted: list[Path] = []

    def convert(path: Path):
        converted.append(path)
        return make_hf_tokenizer(chat_template="{{ messages[0]['content'] }}")

    monkeypatch.setattr(gguf_convert, "convert_gguf_tokenizer", convert)
    return converted


def test_key_follows_path_size_and_mtime(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF v1")
    key = cache_key(model)
    assert key == cache_key(model)
    os.utime(model, ns=(1, 1))
    assert cache_key(model) != key
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF v1")
    os.utime(other, ns=(1, 1))
    assert cache_key(other) != cache_key(model)


def test_converts_once_then_reads_the_cache(tmp_path: Path, monkeypatch) -> None:
    converted = _fake_converter(monkeypatch)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    first = load_gguf_tokenizer(model, tmp_path / "cache")
    second = load_gguf_tokenizer(model, tmp_path / "cache")
    assert converted == [model]
    assert second.encode("hello world") == first.encode("hello world")
    assert second.chat_template == first.chat_template
    model.write_bytes(b"GGUF, changed")  # a new file at the same path: convert again
    load_gguf_tokenizer(model, tmp_path / "cache")
    assert len(converted) == 2


def test_eviction_keeps_the_most_recently_used(tmp_path: Path, monkeypatch) -> None:
    _fake_converter(monkeypatch)
    models = []
    for i in range(3):
        models.append(tmp_path / f"m{i}.gguf")
        models[-1].write_bytes(b"GGUF%d" % i)
    root = tmp_path / "cache"
    load_gguf_tokenizer(models[0], root, max_entries=2)
    load_gguf_tokenizer(models[1], root, max_entries=2)
    os.utime(root / cache_key(models[1]), ns=(10**9, 10**9))  # make m1 the oldest entry
    load_gguf_tokenizer(models[2], root, max_entries=2)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [cache_key(models[0]), cache_key(models[2])]
    )


def test_evict_oldest_returns_what_it_removed(tmp_path: Path) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, ns=(10**9 * (i + 1), 10**9 * (i + 1)))
    (tmp_path / ".staging-x").mkdir()  # in-progress writes are never evicted
    assert evict_oldest(tmp_path, 1) == [tmp_path / "b", tmp_path / "a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging-x", "c"]
