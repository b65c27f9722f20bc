"""Perplexity and the accuracy gate, on a synthetic bigram language model.

The bigram model's logits are the log transition probabilities of the Markov chain that
generated the tokens, so its perplexity is far below the vocabulary size and rounding its
weights to ~2 bits measurably hurts it: the gate must refuse that and accept an exact copy.
"""

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from warpserve.quant import quantize_model
from warpserve.quant.perplexity import (
    AccuracyGateError,
    EvalConfig,
    check_variant,
    gate,
    load_token_ids,
    module_logits_fn,
    perplexity,
    sample_window_starts,
)

VOCAB = 32
DATA = Path(__file__).resolve().parents[1] / "data" / "wikitext2-valid.txt"


class Bigram(nn.Module):
    def __init__(self, log_probs: torch.Tensor) -> None:  # [V, V]: row = previous token
        super().__init__()
        self.embed = nn.Embedding(VOCAB, VOCAB)
        self.embed.weight.data = torch.eye(VOCAB)
        self.lm_head = nn.Linear(VOCAB, VOCAB, bias=False)
        self.lm_head.weight.data = log_probs.t().contiguous()
        self.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.embed(ids))  # [1, T, V]


@pytest.fixture(scope="module")
def chain() -> tuple[Bigram, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(3.0 * torch.randn(VOCAB, VOCAB, generator=generator), dim=-1)
    ids = [0]
    for _ in range(4095):
        ids.append(int(torch.multinomial(probs[ids[-1]], 1, generator=generator)))
    return Bigram(probs.log()), torch.tensor(ids)


def damage_to_2_bits(model: Bigram) -> Bigram:
    """Round every weight row to 4 levels: an int2-like variant."""
    damaged = copy.deepcopy(model)
    w = damaged.lm_head.weight.data
    lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    step = (hi - lo) / 3
    damaged.lm_head.weight.data = lo + torch.round((w - lo) / step) * step
    return damaged


CONFIG = EvalConfig(num_windows=4, window_tokens=256, seed=1)


def test_uniform_logits_have_perplexity_equal_to_vocab(chain):
    _, ids = chain
    result = perplexity(lambda x: torch.zeros(1, x.shape[1], VOCAB), ids, CONFIG)
    assert math.isclose(result.perplexity, VOCAB, rel_tol=1e-6)
    assert result.num_scored_tokens == 4 * 255


def test_windows_are_seeded_aligned_and_disjoint():
    config = EvalConfig(num_windows=5, window_tokens=100, seed=3)
    starts = sample_window_starts(1000, config)
    assert starts == sample_window_starts(1000, config)
    assert starts != sample_window_starts(1000, EvalConfig(5, 100, seed=4))
    assert all(s % 100 == 0 for s in starts) and len(set(starts)) == 5 and max(starts) <= 900
    with pytest.raises(ValueError, match="only 10 windows"):
        sample_window_starts(1000, EvalConfig(num_windows=11, window_tokens=100))


def test_gate_accepts_exact_copy(chain):
    model, ids = chain
    report = check_variant(
        module_logits_fn(model), module_logits_fn(copy.deepcopy(model)), ids, "int8", CONFIG
    )
    assert report.passed and report.relative_increase == 0.0
    assert report.reference.perplexity < VOCAB / 2  # the model is informative


def test_gate_refuses_damaged_variant_unless_forced(chain):
    model, ids = chain
    reference = perplexity(module_logits_fn(model), ids, CONFIG)
    damaged = perplexity(module_logits_fn(damage_to_2_bits(model)), ids, CONFIG)
    with pytest.raises(AccuracyGateError, match=r"refusing int4: .* OVER the \+5.0% budget"):
        gate("int4", reference, damaged)
    report = gate("int4", reference, damaged, force=True)
    assert not report.passed and report.relative_increase > 0.05


def test_gate_accepts_int8_swap_of_the_bigram(chain):
    model, ids = chain
    quantized = quantize_model(copy.deepcopy(model), "int8")
    report = check_variant(
        module_logits_fn(model), module_logits_fn(quantized), ids, "int8", CONFIG
    )
    assert report.passed and abs(report.relative_increase) < 0.015


def test_gate_rejects_mismatched_data_and_unknown_scheme(chain):
    model, ids = chain
    a = perplexity(module_logits_fn(model), ids, CONFIG)
    b = perplexity(module_logits_fn(model), ids, EvalConfig(4, 256, seed=2))
    with pytest.raises(ValueError, match="different windows"):
        gate("int8", a, b)
    with pytest.raises(ValueError, match="no budget for scheme 'int3'"):
        gate("int3", a, a)


def test_load_token_ids_reads_a_slice(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("abcdef", encoding="utf-8")
    ids = load_token_ids(path, lambda text: [ord(c) for c in text], max_chars=4)
    assert ids.tolist() == [97, 98, 99, 100] and ids.dtype == torch.long


@pytest.mark.integration
@pytest.mark.slow
def test_real_model_int8_passes_gate_on_wikitext_slice():
    from warpserve.bench.accuracy import load_hf_gguf_model
    from warpserve.weights.registry import ModelNotFoundError

    try:
        model, encode = load_hf_gguf_model()
    except ModelNotFoundError as err:
        pytest.skip(str(err))
    config = EvalConfig(num_windows=2, window_tokens=128, seed=0, max_chars=20_000)
    ids = load_token_ids(DATA, encode, max_chars=config.max_chars)
    quantized = quantize_model(copy.deepcopy(model), "int8")
    report = check_variant(
        module_logits_fn(model), module_logits_fn(quantized), ids, "int8", config
    )
    assert report.passed, report.summary()
    assert 5 < report.reference.perplexity < 100  # a working small LM on English text
