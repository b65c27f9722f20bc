"""An in-memory word-level tokenizer: enough to test the wrapper without any files."""

from __future__ import annotations

import pytest

WORDS = ["<unk>", "<s>", "</s>", "<eot>", "hello", "world", "chat", "hi"]


def make_hf_tokenizer(chat_template: str | None = None, model_max_length: int | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    kwargs = {"model_max_length": model_max_length} if model_max_length else {}
    hf = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", **kwargs
    )
    hf.add_special_tokens({"additional_special_tokens": ["<eot>"]})
    if chat_template is not None:
        hf.chat_template = chat_template
    return hf


@pytest.fixture
def hf_tokenizer():
    return make_hf_tokenizer()
