"""The fused C++ decode step against the eager modules it replaces.

- each weight format's matmul equals x @ W^T with W the dequantized weight (fp32 rounding);
- fp32 greedy tokens through the engine are identical to the eager engine's, for a batch of
  mixed lengths, with chunked prefill and with speculative verification rows;
- int8 / int4 weights: identical greedy tokens to an eager fp32 model holding the same
  dequantized weights (the fused kernel reads the quantized bytes, the reference does not);
- formats it cannot run exactly (W8A8) leave the engine eager, and it still works.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from warpserve.config import CacheConfig, EngineConfig, ModelConfig, SpeculativeConfig
from warpserve.engine.llm import LLM
from warpserve.engine.llm_engine import LLMEngine
from warpserve.engine.setup import load_model
from warpserve.execution.fused_decode import FusedDecoder, load_extension
from warpserve.execution.memory import on_huge_pages
from warpserve.quant.primitives import (
    pack_int4,
    quantize_int4_groupwise,
    quantize_int8_per_channel,
)
from warpserve.request import SamplingParams

from ..engine.test_engine import BLOCK_BYTES, prompts, token_ids

pytestmark = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")

GREEDY = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
CACHE = CacheConfig(memory_gib=512 * BLOCK_BYTES / 2**30)


@pytest.fixture(scope="module")
def ext():
    module = load_extension()
    assert module is not None, "the fused decode extension failed to build (see the log)"
    return module


def _holder(ext):
    """A FusedModel used only for its linears."""
    return ext.FusedModel(
        16, 1, 1, 16, 16, 1e-6, torch.zeros(1, 16), torch.ones(16), torch.zeros(1, 16),
        torch.zeros(1, 16),
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["f32", "i8", "i4"])
@pytest.mark.parametrize("out_features", [48, 40])  # 40: a partial panel of 16
def test_linear_formats_match_dequantized_matmul(ext, kind, out_features) -> None:
    torch.manual_seed(0)
    n, k, group = out_features, 64, 32
    weight, bias, empty = torch.randn(n, k), torch.randn(n), torch.empty(0)
    if kind == "f32":
        args, reference = (0, weight, empty, empty, bias, 0), weight
    elif kind == "i8":
        q, scale = quantize_int8_per_channel(weight)
        args, reference = (1, q, scale, empty, bias, 0), q.float() * scale[:, None]
    else:
        q, scale, zero = quantize_int4_groupwise(weight, group)
        offset = zero - 8 * scale  # w = q * scale + offset
        args = (2, pack_int4(q), scale, offset, bias, group)
        grouped = q.float().view(n, k // group, group)
        reference = (grouped * scale[..., None] + offset[..., None]).view(n, k)
    holder = _holder(ext)
    index = holder.add_linear(*args, on_huge_pages)
    for rows in (1, 2, 3, 4, 7, 13):  # the register path (<= 3 rows) and the tiled path
        x = torch.randn(rows, k)
        expected = x @ reference.t() + bias
        torch.testing.assert_close(holder.run_linear(index, x), expected, rtol=1e-5, atol=1e-5)


def _engine(folder, backend: str, **model) -> LLMEngine:
    config = EngineConfig(
        model=ModelConfig(model=str(folder), decode_backend=backend, **model), cache=CACHE
    )
    return LLMEngine.from_config(config)


@pytest.fixture(scope="module")
def eager_tokens(tiny_llama_dir) -> list[list[int]]:
    return token_ids(LLM(_engine(tiny_llama_dir, "eager")).generate(prompts(12), GREEDY))


def test_fp32_greedy_is_identical_to_eager(tiny_llama_dir, eager_tokens, ext) -> None:
    engine = _engine(tiny_llama_dir, "fused")
    assert engine.runner.executor.fused is not None
    assert token_ids(LLM(engine).generate(prompts(12), GREEDY)) == eager_tokens
    # Alone, each request gets the same tokens as in the batch.
    alone = [token_ids(LLM(engine).generate([p], GREEDY))[0] for p in prompts(12)[:3]]
    assert alone == eager_tokens[:3]


@pytest.mark.parametrize("block_size", [4, 8, 32])
def test_other_block_sizes_give_the_same_tokens(tiny_llama_dir, eager_tokens, block_size, ext):
    """Block tables, slot mapping and the attention's row offsets at other block sizes; the
    second pass reads its prompts' full blocks from the prefix cache."""
    config = EngineConfig(
        model=ModelConfig(model=str(tiny_llama_dir), decode_backend="fused"),
        cache=CacheConfig(memory_gib=CACHE.memory_gib, block_size=block_size),
    )
    engine = LLMEngine.from_config(config)
    assert engine.runner.executor.fused is not None
    assert token_ids(LLM(engine).generate(prompts(12), GREEDY)) == eager_tokens
    assert token_ids(LLM(engine).generate(prompts(12), GREEDY)) == eager_tokens


def test_speculative_rows_through_fused_decode(tiny_llama_dir, eager_tokens, ext) -> None:
    config = EngineConfig(
        model=ModelConfig(model=str(tiny_llama_dir), decode_backend="fused"),
        cache=CACHE,
        speculative=SpeculativeConfig(method="ngram", num_speculative_tokens=4, ngram_min=1),
    )
    engine = LLMEngine.from_config(config)
    assert engine.runner.executor.fused is not None
    assert token_ids(LLM(engine).generate(prompts(12), GREEDY)) == eager_tokens


def _dequantized_copy(folder, scheme: str):
    """The quantized model with every quantized linear replaced by an nn.Linear holding
    its dequantized weight: the fp32 model the quantized one stands for."""
    loaded = load_model(ModelConfig(model=str(folder), quantization=scheme), CACHE)
    model = loaded.model
    for name, module in list(model.named_modules()):
        if hasattr(module, "dequantized_weight"):
            linear = nn.Linear(module.in_features, module.out_features, module.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(module.dequantized_weight())
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            model.set_submodule(name, linear)
    return loaded


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantized_weights_match_their_dequantized_model(tiny_llama_dir, scheme, ext) -> None:
    reference = LLMEngine(_dequantized_copy(tiny_llama_dir, scheme), _config(tiny_llama_dir))
    expected = token_ids(LLM(reference).generate(prompts(8), GREEDY))
    # Prefill through the same dequantized model; every decode step through the fused
    # kernel reading the quantized bytes of the same weights.
    engine = LLMEngine(_dequantized_copy(tiny_llama_dir, scheme), _config(tiny_llama_dir))
    quantized = load_model(ModelConfig(model=str(tiny_llama_dir), quantization=scheme), CACHE)
    executor = engine.runner.executor
    executor.fused = FusedDecoder.build(quantized.model, executor.kv_caches)
    assert engine.runner.executor.fused is not None
    assert token_ids(LLM(engine).generate(prompts(8), GREEDY)) == expected


def _config(folder) -> EngineConfig:
    return EngineConfig(model=ModelConfig(model=str(folder)), cache=CACHE)


def test_w8a8_stays_eager_and_works(tiny_llama_dir, caplog) -> None:
    engine = _engine(tiny_llama_dir, "fused", quantization="w8a8")
    assert engine.runner.executor.fused is None
    assert "fused decode unavailable" in caplog.text
    outputs = LLM(engine).generate(prompts(2), GREEDY)
    assert all(len(o.outputs[0].token_ids) == GREEDY.max_tokens for o in outputs)


def test_fallback_model_is_refused(tiny_llama_dir) -> None:
    engine = _engine(tiny_llama_dir, "eager", force_fallback=True)
    assert FusedDecoder.build(engine.runner.model, []) is None


def test_fused_window_logits_match_eager_forward(tiny_llama_dir, ext) -> None:
    """Perplexity through the fused kernel scores what the eager model scores."""
    from warpserve.quant.perplexity import EvalConfig, perplexity

    loaded = load_model(ModelConfig(model=str(tiny_llama_dir)), CACHE)
    ids = torch.tensor([t for p in prompts(6) for t in p])
    config = EvalConfig(num_windows=2, window_tokens=64)
    fused_fn = _fused_logits_fn(loaded.model, 64)
    eager = perplexity(_eager_logits_fn(loaded.model), ids, config)
    fused = perplexity(fused_fn, ids, config)
    assert fused.window_starts == eager.window_starts
    assert abs(fused.perplexity / eager.perplexity - 1) < 1e-4


@pytest.mark.parametrize(
    ("hidden", "heads", "kv_heads"),
    [(128, 2, 1), (80, 2, 2), (96, 4, 2)],  # head_dim 64 (unrolled), 40 (any D % 8), 24
)
def test_attention_head_dims_match_eager(tmp_path, hidden, heads, kv_heads, ext) -> None:
    """Each vectorized attention path (register-blocked head_dim 64, any head_dim % 8, and
    the scalar one) scores what the eager model scores, over contexts of 1..96 keys (every
    tail of the 8-key and 2-position loops)."""
    from warpserve.quant.perplexity import EvalConfig, perplexity

    from ..conftest import build_tiny_llama, build_tokenizer

    tokenizer = build_tokenizer(tmp_path)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    build_tiny_llama(
        tmp_path, len(tokenizer), eos_id, hidden_size=hidden, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=2 * hidden,
    )  # fmt: skip
    loaded = load_model(ModelConfig(model=str(tmp_path)), CACHE)
    ids = torch.tensor([t for p in prompts(8) for t in p])
    config = EvalConfig(num_windows=2, window_tokens=96)
    eager = perplexity(_eager_logits_fn(loaded.model), ids, config)
    fused = perplexity(_fused_logits_fn(loaded.model, 96), ids, config)
    assert abs(fused.perplexity / eager.perplexity - 1) < 1e-4


def _fused_logits_fn(model, max_tokens: int):
    """A window's T tokens as T decode rows of one fused call (the executor's
    fused_max_tokens path), row t attending to positions 0..t: [1, T] -> [1, T, V]."""
    from warpserve.execution.executor import ModelExecutor
    from warpserve.execution.inputs import Chunk

    num_blocks = -(-max_tokens // 16)
    executor = ModelExecutor.build(model, num_blocks, 16, "fused", fused_max_tokens=max_tokens)
    assert executor.fused is not None

    def logits_fn(input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids[0].tolist()
        chunk = Chunk(ids, 0, range(num_blocks), is_decode_rows=False, num_logits=len(ids))
        return executor.logits([chunk])[None]

    return logits_fn


def _eager_logits_fn(model):
    """Full-sequence logits from the native model's eager forward (one prefill chunk)."""
    from warpserve.execution.memory import allocate_kv
    from warpserve.layers.attention import AttentionMetadata, PrefillChunk

    def logits_fn(input_ids: torch.Tensor) -> torch.Tensor:
        num = input_ids.shape[1]
        kv = allocate_kv(model, -(-num // 16), 16)
        meta = AttentionMetadata(
            slot_mapping=torch.arange(num),
            num_decode_tokens=0,
            decode_block_tables=torch.empty(0, 1, dtype=torch.long),
            decode_context_lens=torch.empty(0, dtype=torch.long),
            prefills=[PrefillChunk(0, num, 0, torch.arange(-(-num // 16)))],
        )
        with torch.inference_mode():
            hidden = model(input_ids[0], torch.arange(num), kv, meta)
            return model.compute_logits(hidden)[None]

    return logits_fn
