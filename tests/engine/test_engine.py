"""Engine invariants on a tiny random-init Llama (fp32, greedy unless stated):
batch == single, prefix caching on == off, chunked prefill on == off, preemption changes
nothing, every block comes back, n > 1 shares the prompt, and bad input is refused."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from warpserve.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from warpserve.engine.llm import LLM
from warpserve.engine.llm_engine import LLMEngine
from warpserve.request import FinishReason, SamplingParams
from warpserve.runner.fallback import FallbackRunner
from warpserve.scheduler.scheduler import QueueFullError

BLOCK_BYTES = 2 * 2 * 16 * 2 * 16 * 4  # K+V x layers x block_size x kv heads x head_dim x fp32


def make_llm(folder, num_blocks=512, prefix=True, max_tokens_per_step=256, **sched) -> LLM:
    config = EngineConfig(
        model=ModelConfig(model=str(folder)),
        cache=CacheConfig(
            memory_gib=num_blocks * BLOCK_BYTES / 2**30, enable_prefix_caching=prefix
        ),
        scheduler=SchedulerConfig(max_num_batched_tokens=max_tokens_per_step, **sched),
    )
    return LLM.from_config(config)


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 400) for _ in range(rng.randint(5, 120))] for _ in range(count)]


GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)


def token_ids(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


@pytest.fixture(scope="module")
def llm(tiny_llama_dir) -> LLM:
    return make_llm(tiny_llama_dir)


@pytest.fixture(scope="module")
def reference_tokens(llm) -> list[list[int]]:
    """Each of 17 prompts run alone."""
    return [token_ids(llm.generate([p], GREEDY))[0] for p in prompts(17)]


def test_matches_transformers_generate(llm, tiny_llama_dir, reference_tokens) -> None:
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    for prompt, ours in zip(prompts(17)[:4], reference_tokens[:4], strict=True):
        out = hf.generate(
            torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False
        )
        assert out[0, len(prompt) :].tolist() == ours


def test_batch_equals_single(llm, reference_tokens) -> None:
    assert token_ids(llm.generate(prompts(17), GREEDY)) == reference_tokens


def test_prefix_caching_off_changes_nothing(tiny_llama_dir, reference_tokens) -> None:
    off = make_llm(tiny_llama_dir, prefix=False)
    assert token_ids(off.generate(prompts(17), GREEDY)) == reference_tokens


def test_chunked_prefill_changes_nothing(tiny_llama_dir, reference_tokens) -> None:
    chunked = make_llm(tiny_llama_dir, max_tokens_per_step=32, max_num_seqs=8)
    assert token_ids(chunked.generate(prompts(17), GREEDY)) == reference_tokens


def test_preemption_changes_nothing(tiny_llama_dir, reference_tokens) -> None:
    small = make_llm(tiny_llama_dir, num_blocks=24)  # 384 tokens for 17 sequences
    outputs = small.generate(prompts(17), GREEDY)
    assert small.engine.stats().num_preemptions > 0
    assert token_ids(outputs) == reference_tokens


def test_shared_prefix_hits_cache_and_matches(llm) -> None:
    system = prompts(1, seed=5)[0][:64]
    batch = [system + p[:10] for p in prompts(6, seed=6)]
    alone = [token_ids(llm.generate([p], GREEDY))[0] for p in batch]
    before = llm.engine.stats().prefix_cache_hits
    assert token_ids(llm.generate(batch, GREEDY)) == alone
    assert llm.engine.stats().prefix_cache_hits - before >= 5 * 64


def test_every_block_returns(llm) -> None:
    engine = llm.engine
    total = engine.stats().num_total_blocks
    for i, p in enumerate(prompts(6)):
        engine.add_request(f"r{i}", p, GREEDY)
    engine.step()
    engine.step()
    engine.abort_request("r0")
    engine.abort_request("r3")
    while engine.has_unfinished_requests():
        engine.step()
    stats = engine.stats()
    assert stats.num_free_blocks == total
    assert stats.num_running == stats.num_waiting == 0


def test_n_choices_share_prompt_blocks(llm) -> None:
    params = SamplingParams(n=3, max_tokens=8, temperature=1.0, seed=7, ignore_eos=True)
    (out,) = llm.generate([prompts(1, seed=9)[0][:64]], params)
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(len(c.token_ids) == 8 for c in out.outputs)
    assert out.num_cached_tokens >= 48  # the later children found the prompt cached


def test_seed_reproduces_whatever_the_batch(llm) -> None:
    params = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=1234)
    prompt = prompts(1, seed=3)[0]
    alone = token_ids(llm.generate([prompt], params))[0]
    others = [p for p in prompts(5, seed=4)]
    mixed = llm.generate([*others, prompt], [SamplingParams(max_tokens=16)] * 5 + [params])
    assert token_ids(mixed)[-1] == alone


def test_stop_string_cuts_text_and_finishes(llm) -> None:
    (full,) = llm.generate([prompts(1)[0]], GREEDY)
    text = full.outputs[0].text
    stop = text[5:8]
    assert stop and stop not in text[:7]
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, stop=[stop])
    (out,) = llm.generate([prompts(1)[0]], params)
    assert out.outputs[0].text == text[: text.index(stop)]
    assert out.outputs[0].finish_reason is FinishReason.STOP
    assert out.outputs[0].stop_reason == stop


def test_streamed_text_is_final_text(llm) -> None:
    """Incremental detokenization: every partial text is a prefix of the final text."""
    engine = llm.engine
    engine.add_request("stream", "Émojis 🙂 and accents (café", GREEDY)
    seen = []
    while engine.has_unfinished_requests():
        seen.extend(out.outputs[0].text for out in engine.step())
    final = seen[-1]
    assert all(final.startswith(s) for s in seen)
    assert "\ufffd" not in seen[-2] or final.count("\ufffd") >= seen[-2].count("\ufffd")


def test_detokenizer_matches_full_decode(llm) -> None:
    (out,) = llm.generate(["Émojis 🙂 and"], GREEDY)
    assert out.outputs[0].text == llm.tokenizer.decode(out.outputs[0].token_ids)


@pytest.mark.parametrize(
    "prompt, params, match",
    [
        ("", GREEDY, "empty"),
        ([], GREEDY, "empty"),
        ([1] * 600, GREEDY, "context"),
        ([10**6], GREEDY, "token ids"),
    ],
)
def test_bad_requests_are_refused_and_engine_survives(llm, prompt, params, match) -> None:
    with pytest.raises(ValueError, match=match):
        llm.engine.add_request("bad", prompt, params)
    assert token_ids(llm.generate([prompts(1)[0]], GREEDY))[0]


@pytest.mark.parametrize(
    "field, value", [("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5), ("max_tokens", 0)]
)
def test_bad_sampling_params_name_the_field(field, value) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_full_queue_is_refused(tiny_llama_dir) -> None:
    llm = make_llm(tiny_llama_dir, max_waiting=2)
    for i in range(2):
        llm.engine.add_request(f"q{i}", [5, 6, 7], GREEDY)
    with pytest.raises(QueueFullError):
        llm.engine.add_request("q2", [5, 6, 7], GREEDY)


def test_transformers_fallback_gives_the_same_tokens(tiny_llama_dir, reference_tokens) -> None:
    config = EngineConfig(
        model=ModelConfig(model=str(tiny_llama_dir), force_fallback=True),
        cache=CacheConfig(memory_gib=512 * BLOCK_BYTES / 2**30),
    )
    fallback = LLMEngine.from_config(config)
    assert isinstance(fallback.runner, FallbackRunner)
    assert token_ids(LLM(fallback).generate(prompts(17)[:3], GREEDY)) == reference_tokens[:3]


def test_int8_engine_stays_close_to_fp32(tiny_llama_dir, reference_tokens) -> None:
    """Weight-only int8 through the whole engine: most greedy tokens agree with fp32."""
    config = EngineConfig(
        model=ModelConfig(model=str(tiny_llama_dir), quantization="int8"),
        cache=CacheConfig(memory_gib=512 * BLOCK_BYTES / 2**30),
    )
    int8 = LLM.from_config(config)
    outputs = token_ids(int8.generate(prompts(17)[:6], GREEDY))
    first_tokens_equal = sum(o[0] == r[0] for o, r in zip(outputs, reference_tokens, strict=False))
    assert first_tokens_equal >= 5
