"""Shared fixtures: a tiny byte-level BPE tokenizer and tiny random-init decoders saved as
real Hugging Face folders, so tests go through the same loading path as users do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from warpserve.config import DATA_DIR_ENV

# Tests use tiny models: one intra-op thread avoids OpenMP barrier stalls when the
# machine is busy, and changes no result that a test asserts.
torch.set_num_threads(1)
# Reference text (WikiText-2, STS-B slices) from the repository, never from outside it;
# set here rather than in a fixture so subprocesses started by tests inherit it.
os.environ[DATA_DIR_ENV] = str(Path(__file__).resolve().parent / "data")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "Paged attention keeps keys and values in fixed-size blocks. ",
    "Continuous batching schedules a number of tokens per request each step. ",
    "Émojis 🙂 and accents (café, naïve, 東京) must survive incremental decoding. ",
    "def add(a, b):\n    return a + b\n",
]


def build_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=512,
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(folder)
    return hf


def build_tiny_llama(folder: Path, vocab_size: int, eos_id: int, seed: int = 0, **overrides):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    shape = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    config = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=512,
        # A wide init gives peaked next-token distributions, so greedy decoding has clear
        # winners and batch-size-dependent rounding cannot flip a token.
        initializer_range=0.25,
        tie_word_embeddings=False,
        eos_token_id=eos_id,
        bos_token_id=0,
        **{**shape, **overrides},
    )
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    GenerationConfig(eos_token_id=eos_id, bos_token_id=0).save_pretrained(folder)
    return model


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A Hugging Face folder: tiny Llama (GQA) + byte-level BPE tokenizer + chat template."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer(folder)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    build_tiny_llama(folder, len(tokenizer), eos_id)
    return folder
