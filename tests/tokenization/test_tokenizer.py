"""The `Tokenizer` wrapper: ids, end-of-generation ids, lengths and chat templates."""

from __future__ import annotations

import pytest

from tests.tokenization.conftest import make_hf_tokenizer
from warpserve.tokenization.tokenizer import Tokenizer

TEMPLATE = (
    "{% for m in messages %}{% if m['role'] not in ('user', 'assistant') %}"
    "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}"
    "[{{ m['role'] }}] {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
)


def test_encode_decode_and_tokens(hf_tokenizer) -> None:
    tokenizer = Tokenizer(hf_tokenizer)
    ids = tokenizer.encode("hello world")
    assert ids == [4, 5]
    assert tokenizer.encode_batch(["hello world", "hi"]) == [[4, 5], [7]]
    assert tokenizer.decode([4, 2, 5]) == "hello world"  # </s> skipped by default
    assert tokenizer.decode([4, 2, 5], skip_special_tokens=False) == "hello </s> world"
    assert tokenizer.convert_ids_to_tokens([4, 3]) == ["hello", "<eot>"]
    assert tokenizer.vocab_size == len(hf_tokenizer) == 8
    assert tokenizer.hf is hf_tokenizer


def test_eos_ids_are_the_union_of_tokenizer_and_generation_config(hf_tokenizer) -> None:
    assert Tokenizer(hf_tokenizer).eos_token_ids == frozenset({2})
    tokenizer = Tokenizer(
        hf_tokenizer, generation_config={"eos_token_id": [3, 2], "bos_token_id": 1}
    )
    assert tokenizer.eos_token_ids == frozenset({2, 3})
    assert tokenizer.bos_token_id == 1
    assert Tokenizer(hf_tokenizer, {"eos_token_id": 3}).eos_token_ids == frozenset({2, 3})


def test_max_model_len_is_the_smaller_known_limit() -> None:
    assert Tokenizer(make_hf_tokenizer()).max_model_len is None  # Transformers' "no limit"
    assert Tokenizer(make_hf_tokenizer(), max_model_len=2048).max_model_len == 2048
    limited = make_hf_tokenizer(model_max_length=512)
    assert Tokenizer(limited, max_model_len=2048).max_model_len == 512
    assert Tokenizer(limited, max_model_len=256).max_model_len == 256


def test_chat_template_renders() -> None:
    tokenizer = Tokenizer(make_hf_tokenizer(chat_template=TEMPLATE))
    messages = [{"role": "user", "content": "hi"}]
    assert tokenizer.has_chat_template
    assert tokenizer.apply_chat_template(messages) == "[user] hi [assistant]"
    assert tokenizer.apply_chat_template(messages, add_generation_prompt=False) == "[user] hi "


def test_template_errors_become_value_errors() -> None:
    tokenizer = Tokenizer(make_hf_tokenizer(chat_template=TEMPLATE), name="tiny")
    with pytest.raises(
        ValueError, match="chat template of tiny rejected the messages: unknown role tool"
    ):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}])


def test_no_chat_template_is_a_clear_error(hf_tokenizer) -> None:
    tokenizer = Tokenizer(hf_tokenizer, name="bert-ish")
    assert not tokenizer.has_chat_template
    with pytest.raises(ValueError, match="bert-ish has no chat template"):
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])


def test_slow_tokenizers_are_refused() -> None:
    with pytest.raises(ValueError, match="fast tokenizer"):
        Tokenizer(object())  # type: ignore[arg-type]
