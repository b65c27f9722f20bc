"""SmolLM2-135M-Instruct (the bundled GGUF): warpserve's greedy tokens == Transformers'.

fp32, 64 new tokens, several prompts, chat template applied. The reference is
`AutoModelForCausalLM.from_pretrained(..., gguf_file=...).generate` (KV cache, greedy).
"""

from __future__ import annotations

import pytest
import torch

from warpserve.config import CacheConfig, EngineConfig, ModelConfig
from warpserve.engine.llm import LLM
from warpserve.request import SamplingParams

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about paged attention.",
    "List three prime numbers and explain why they are prime.",
    "Translate 'good morning' into Spanish and German.",
]


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM.from_config(
        EngineConfig(
            model=ModelConfig(model="smollm2-135m-instruct"), cache=CacheConfig(memory_gib=0.25)
        )
    )


@pytest.fixture(scope="module")
def hf_model():
    from warpserve.bench.hf_baseline import load_hf_model

    return load_hf_model("smollm2-135m-instruct")


def chat(llm: LLM, text: str) -> list[int]:
    prompt = llm.tokenizer.apply_chat_template([{"role": "user", "content": text}])
    return llm.tokenizer.encode(prompt, add_special_tokens=False)


def test_greedy_64_tokens_match_transformers(llm, hf_model) -> None:
    # min_tokens masks EOS as min_new_tokens does in Transformers.
    params = SamplingParams(max_tokens=64, min_tokens=64, temperature=0.0)
    prompt_ids = [chat(llm, p) for p in PROMPTS]
    ours = [o.outputs[0].token_ids for o in llm.generate(prompt_ids, params)]
    for ids, tokens in zip(prompt_ids, ours, strict=True):
        with torch.inference_mode():
            ref = hf_model.generate(
                torch.tensor([ids]), max_new_tokens=64, min_new_tokens=64, do_sample=False
            )
        assert tokens == ref[0, len(ids) :].tolist()


def test_batch_equals_single_on_the_real_model(llm) -> None:
    params = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
    prompt_ids = [chat(llm, p) for p in PROMPTS]
    alone = [llm.generate([ids], params)[0].outputs[0].token_ids for ids in prompt_ids]
    together = [o.outputs[0].token_ids for o in llm.generate(prompt_ids * 4, params)]
    assert together == alone * 4


def test_chat_answer_is_sensible(llm) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.0)
    (out,) = llm.generate([chat(llm, PROMPTS[0])], params)
    assert "Paris" in out.outputs[0].text
