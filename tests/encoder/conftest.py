"""Tiny random-init BERT encoders saved as real sentence-transformers / Hugging Face folders
(hidden 32, 2 layers), so tests take the same loading path users do, in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

TRAINING_TEXT = [
    "a man is playing a guitar on the stage tonight",
    "the quick brown fox jumps over the lazy dog",
    "a woman is slicing an onion in the kitchen",
    "encoders turn sentences into vectors for search and ranking",
    "the cat sat on the mat while the dog slept by the door",
    "stocks fell sharply after the central bank raised interest rates",
]
SENTENCES = [
    "a man is playing a guitar",
    "the dog slept",
    "a woman is slicing an onion in the kitchen while the cat sat on the mat by the door",
    "stocks fell",
    "search and ranking turn sentences into vectors",
    "the quick brown fox",
]


def build_wordpiece_tokenizer(folder: Path, model_max_length: int = 64) -> int:
    """A BERT-style WordPiece tokenizer trained on TRAINING_TEXT; returns its vocab size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=specials, show_progress=False
    )
    tok.train_from_iterator(TRAINING_TEXT, trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
    hf.save_pretrained(folder)
    return tok.get_vocab_size()


def build_tiny_encoder(folder: Path, pooling: str = "mean", num_labels: int | None = None) -> Path:
    """num_labels None: a bare BertModel with a sentence-transformers pooling config;
    otherwise BertForSequenceClassification (1 label: a cross-encoder)."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = build_wordpiece_tokenizer(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=2,
        # 5x BERT's usual init: with 0.02 the residual stream barely sees the layers, so
        # neither quantization nor damage would show in the outputs
        initializer_range=0.1,
    )
    if num_labels is None:
        BertModel(config).save_pretrained(folder)
        _write_pooling(folder, pooling)
    else:
        config.num_labels = num_labels
        config.id2label = {i: f"label_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
        BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def _write_pooling(folder: Path, mode: str) -> None:
    flags = {
        "pooling_mode_cls_token": mode == "cls",
        "pooling_mode_mean_tokens": mode == "mean",
        "pooling_mode_max_tokens": mode == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_lasttoken": mode == "lasttoken",
    }
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": 32, **flags})
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
        {
            "idx": 2,
            "name": "2",
            "path": "2_Normalize",
            "type": "sentence_transformers.models.Normalize",
        },
    ]
    (folder / "modules.json").write_text(json.dumps(modules))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders by name: mean, cls, max, lasttoken (embedders), classify (3 labels), rerank."""
    root = tmp_path_factory.mktemp("tiny-encoders")
    models = {
        mode: build_tiny_encoder(root / mode, mode) for mode in ("mean", "cls", "max", "lasttoken")
    }
    models["classify"] = build_tiny_encoder(root / "classify", num_labels=3)
    models["rerank"] = build_tiny_encoder(root / "rerank", num_labels=1)
    return models


@pytest.fixture(scope="session")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("encoder-cache")
