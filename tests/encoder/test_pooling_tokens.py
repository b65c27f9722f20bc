"""Pooling modes on hand-made tensors, the pooling config, and the one truncation rule."""

from __future__ import annotations

import json

import pytest
import torch

from warpserve.encoder.models import load_spec
from warpserve.encoder.pooling import pool, read_pooling_config
from warpserve.encoder.tokens import EncoderTokenizer, cache_key, collate

# [B=2, S=3, H=2]; row 1 has one padding position whose values must never leak
HIDDEN = torch.tensor(
    [[[1.0, -1.0], [3.0, -3.0], [5.0, 9.0]], [[2.0, -8.0], [4.0, -2.0], [100.0, 100.0]]]
)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("mean", [[3.0, 5.0 / 3.0], [3.0, -5.0]]),
        ("cls", [[1.0, -1.0], [2.0, -8.0]]),
        ("max", [[5.0, 9.0], [4.0, -2.0]]),
        ("lasttoken", [[5.0, 9.0], [4.0, -2.0]]),
    ],
)
def test_pooling_ignores_padding(mode: str, expected: list[list[float]]) -> None:
    torch.testing.assert_close(pool(HIDDEN, MASK, mode), torch.tensor(expected))


def test_pooling_config_is_read_from_the_modules_file(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    modules = [
        {"idx": 1, "name": "1", "path": "pool", "type": "sentence_transformers.models.Pooling"}
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    assert read_pooling_config(tmp_path).mode == "cls"
    assert read_pooling_config(tmp_path / "pool").mode == "mean"  # no config: mean


def test_too_long_input_is_cut_or_refused_naming_the_limit(tiny_models) -> None:  # noqa: ANN001
    spec = load_spec(str(tiny_models["mean"]))
    tokenizer = EncoderTokenizer(spec.path, max_input_tokens=8)
    long_text = "the quick brown fox jumps over the lazy dog " * 3
    with pytest.raises(
        ValueError, match=r"input \d+ has \d+ tokens, the model's limit is 8; pass truncate=true"
    ):
        tokenizer.encode(long_text, truncate=False)
    cut = tokenizer.encode(long_text, truncate=True)
    assert cut.num_tokens == 8
    assert cut.ids[-1] == tokenizer.encode("dog").ids[-1]  # still ends with [SEP]
    assert tokenizer.encode("the dog", truncate=False).num_tokens == 4


def test_pairs_carry_segment_ids_and_padding_is_right(tiny_models) -> None:  # noqa: ANN001
    spec = load_spec(str(tiny_models["rerank"]), "rerank")
    tokenizer = EncoderTokenizer(spec.path, spec.max_input_tokens)
    pair, single = tokenizer.encode(("the dog", "the quick brown fox")), tokenizer.encode("dog")
    assert pair.type_ids[0] == 0 and pair.type_ids[-1] == 1
    batch = collate([pair, single], tokenizer.pad_id, spec.input_names)
    assert batch["attention_mask"].tolist()[1] == [1] * single.num_tokens + [0] * (
        pair.num_tokens - single.num_tokens
    )
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}


def test_repeated_inputs_hit_the_cache(tiny_models) -> None:  # noqa: ANN001
    text = "a man is playing a guitar"
    first = EncoderTokenizer(tiny_models["mean"], 64).encode(text)
    two_entries = 2 * (44 * first.num_tokens + 400)  # room for two encodings this long
    tokenizer = EncoderTokenizer(tiny_models["mean"], 64, cache_bytes=two_entries)
    first = tokenizer.encode(text)
    assert tokenizer.encode(text) is first
    assert tokenizer.encode(text, truncate=False) is not first  # its own entry
    tokenizer.encode("a man is playing a drum")  # evicts the least recently used
    assert tokenizer.encode(text) is not first


def test_the_cache_is_capped_in_bytes_and_never_holds_a_text(tiny_models) -> None:  # noqa: ANN001
    tokenizer = EncoderTokenizer(tiny_models["mean"], 64, cache_bytes=100_000)
    for index in range(200):
        tokenizer.encode(f"{index} " + "the quick brown fox jumps over the lazy dog " * 2000)
        assert tokenizer.cache_bytes <= 100_000
    keys = list(tokenizer._cache._items)
    assert keys and all(isinstance(key, bytes) and len(key) == 32 for key in keys)
    # a pair is not the single text of its parts run together
    assert cache_key(("a", "bc"), True) != cache_key(("ab", "c"), True)
    assert cache_key("ab", True) != cache_key("ab", False)


def test_task_is_inferred_from_the_head(tiny_models) -> None:  # noqa: ANN001
    assert load_spec(str(tiny_models["mean"]), "auto").task == "embed"
    assert load_spec(str(tiny_models["classify"]), "auto").labels == (
        "label_0",
        "label_1",
        "label_2",
    )
    assert load_spec(str(tiny_models["rerank"]), "auto").task == "rerank"
    with pytest.raises(ValueError, match="no sequence-classification head"):
        load_spec(str(tiny_models["mean"]), "rerank")
