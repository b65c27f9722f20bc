"""The two decode attentions a model can be built with (layers/paged_kernel.py): the C++
kernel (float32 and bfloat16 caches) and gather + SDPA, against a per-row reference, over
contexts that end mid-block and tables padded to the longest one; and the engine built with
each gives the same greedy tokens."""

from __future__ import annotations

import shutil

import pytest
import torch

from warpserve.config import EngineConfig, ModelConfig
from warpserve.engine.llm import LLM
from warpserve.execution.inputs import Chunk, build_step_inputs
from warpserve.layers import paged_kernel
from warpserve.layers.attention import sdpa_decode
from warpserve.request import SamplingParams

from ..engine.test_engine import prompts, token_ids
from .test_fused_decode import CACHE

BLOCK, HKV, GROUP, D = 4, 2, 3, 64
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


def _case(dtype: torch.dtype):
    torch.manual_seed(0)
    context_lens = [1, 5, 8, 13]  # 13: a fourth block, 1 key into it
    tables = [[9, 2, 7, 0], [3, 4], [5, 6], [1, 8, 10, 11]]
    chunks = [Chunk([0], n - 1, t, True) for n, t in zip(context_lens, tables, strict=True)]
    meta = build_step_inputs(chunks, BLOCK).meta
    kv_cache = torch.randn(2, 12, BLOCK, HKV, D).to(dtype)
    q = torch.randn(len(chunks), HKV * GROUP, D)
    return q, kv_cache, meta, context_lens, tables


def _reference(q, kv_cache, context_lens, tables, scale) -> torch.Tensor:
    out = torch.empty_like(q)
    for b, (n, table) in enumerate(zip(context_lens, tables, strict=True)):
        slots = [table[p // BLOCK] * BLOCK + p % BLOCK for p in range(n)]
        keys = kv_cache[0].view(-1, HKV, D)[slots].float()  # [n, Hkv, D]
        values = kv_cache[1].view(-1, HKV, D)[slots].float()
        for h in range(HKV * GROUP):
            weights = torch.softmax(keys[:, h // GROUP] @ q[b, h] * scale, dim=0)
            out[b, h] = weights @ values[:, h // GROUP]
    return out


def test_sdpa_decode_matches_reference() -> None:
    q, kv_cache, meta, lens, tables = _case(torch.float32)
    expected = _reference(q, kv_cache, lens, tables, D**-0.5)
    torch.testing.assert_close(sdpa_decode(q, kv_cache, meta, D**-0.5), expected)


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_decode_matches_reference(dtype) -> None:
    decode = paged_kernel.decode_attention("kernel")
    q, kv_cache, meta, lens, tables = _case(dtype)
    expected = _reference(q, kv_cache, lens, tables, D**-0.5)
    torch.testing.assert_close(decode(q, kv_cache, meta, D**-0.5), expected)


def test_sdpa_is_chosen_when_asked() -> None:
    assert paged_kernel.decode_attention("sdpa") is sdpa_decode


def test_engine_tokens_do_not_depend_on_the_decode_attention(tiny_llama_dir) -> None:
    def generate(backend: str) -> list[list[int]]:
        model = ModelConfig(
            model=str(tiny_llama_dir), decode_backend="eager", attention_backend=backend
        )
        llm = LLM.from_config(EngineConfig(model=model, cache=CACHE))
        return token_ids(llm.generate(prompts(6), GREEDY))

    assert generate("sdpa") == generate("auto")
