"""Speculative decoding through the engine, on tiny random models (fp32):
greedy output with speculation == without, token for token, for every proposer, alone and
in a batch of mixed requests; sampling keeps the target's distribution (chi-square); the
block pool is full again after runs with many rejections, preemptions and aborts."""

from __future__ import annotations

import random

import pytest
import torch
from scipy.stats import chisquare
from transformers import AutoModelForCausalLM

from tests.spec_decode.conftest import SMALL_VOCAB, make_llm
from warpserve.config import SpeculativeConfig
from warpserve.request import SamplingParams

GREEDY = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [
        [rng.randrange(3, SMALL_VOCAB) for _ in range(rng.randint(4, 50))] for _ in range(count)
    ]


def token_ids(outputs) -> list[list[int]]:
    return [c.token_ids for o in outputs for c in o.outputs]


def spec_configs(small_target_dir, small_draft_dir) -> dict[str, SpeculativeConfig]:
    return {
        "ngram": SpeculativeConfig(method="ngram", ngram_min=1, adaptive=False),
        "ngram-adaptive": SpeculativeConfig(method="ngram", ngram_min=1),
        "auto": SpeculativeConfig(method="auto", ngram_min=1),
        "draft-other": SpeculativeConfig(method="draft", draft_model=str(small_draft_dir)),
        "draft-self": SpeculativeConfig(method="draft", draft_model=str(small_target_dir)),
        "layerskip": SpeculativeConfig(method="layerskip", layer_skip_depth=1, adaptive=False),
    }


METHODS = ["ngram", "ngram-adaptive", "auto", "draft-other", "draft-self", "layerskip"]


@pytest.fixture(scope="module")
def plain(small_target_dir):
    return make_llm(small_target_dir)


@pytest.fixture(scope="module")
def reference(plain) -> list[list[int]]:
    return [token_ids(plain.generate([p], GREEDY))[0] for p in prompts(8)]


@pytest.fixture(scope="module", params=METHODS)
def spec_llm(request, small_target_dir, small_draft_dir):
    config = spec_configs(small_target_dir, small_draft_dir)[request.param]
    return request.param, make_llm(small_target_dir, config)


def test_greedy_is_exact_alone_and_batched(spec_llm, reference) -> None:
    method, llm = spec_llm
    alone = [token_ids(llm.generate([p], GREEDY))[0] for p in prompts(8)]
    assert alone == reference
    assert token_ids(llm.generate(prompts(8), GREEDY)) == reference
    stats = llm.engine.stats()
    assert stats.spec_decode_method == method.split("-")[0]
    assert stats.spec_decode_num_drafts > 0
    assert 0 < stats.spec_decode_num_accepted_tokens <= stats.spec_decode_num_draft_tokens
    if method.startswith("draft"):  # drafts through its own fused decoder where the target does
        runner = llm.engine.runner
        drafting = runner.speculator.proposer.executor
        assert drafting.decode_backend == runner.executor.decode_backend
    if method == "draft-self":  # the target drafting for itself is always right
        assert stats.spec_decode_num_accepted_tokens == stats.spec_decode_num_draft_tokens
    else:  # both the accept and the reject paths ran
        assert stats.spec_decode_num_accepted_tokens < stats.spec_decode_num_draft_tokens
    assert stats.num_free_blocks == stats.num_total_blocks


def mixed_batch() -> tuple[list[list[int]], list[SamplingParams]]:
    """Greedy, greedy with processors, min_tokens, stop strings, sampled (seeded), n = 2."""
    params = [
        GREEDY,
        SamplingParams(max_tokens=30, temperature=0.0, repetition_penalty=1.3),
        SamplingParams(max_tokens=30, temperature=0.0, presence_penalty=0.5, frequency_penalty=0.3),
        SamplingParams(max_tokens=30, temperature=0.0, min_tokens=20, logit_bias={5: 1.5}),
        SamplingParams(max_tokens=25, temperature=0.8, top_k=5, seed=3, ignore_eos=True),
        SamplingParams(max_tokens=25, top_p=0.9, n=2, seed=4, ignore_eos=True),
        SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, logprobs=2),
    ]
    return prompts(len(params), seed=1), params


def test_mixed_batch_greedy_rows_are_exact(spec_llm, plain) -> None:
    _, llm = spec_llm
    batch, params = mixed_batch()
    expected = plain.generate(batch, params)
    got = llm.generate(batch, params)
    for want, have, p in zip(expected, got, params, strict=True):
        if p.is_greedy:
            assert token_ids([have]) == token_ids([want])
            assert have.outputs[0].finish_reason == want.outputs[0].finish_reason
        else:
            assert all(len(c.token_ids) == p.max_tokens for c in have.outputs)
    want_lp, have_lp = expected[-1].outputs[0].logprobs, got[-1].outputs[0].logprobs
    assert [t.token_id for t in have_lp] == [t.token_id for t in want_lp]
    assert all(abs(a.logprob - b.logprob) < 1e-4 for a, b in zip(have_lp, want_lp, strict=True))
    stats = llm.engine.stats()
    assert stats.num_free_blocks == stats.num_total_blocks


def test_stop_string_inside_accepted_drafts(small_target_dir, plain) -> None:
    prompt = prompts(1, seed=2)[0]
    (full,) = plain.generate([prompt], GREEDY)
    text = full.outputs[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop=[stop])
    config = SpeculativeConfig(method="draft", draft_model=str(small_target_dir), adaptive=False)
    (want,) = plain.generate([prompt], params)
    (have,) = make_llm(small_target_dir, config).generate([prompt], params)
    assert have.outputs[0].text == want.outputs[0].text
    assert have.outputs[0].token_ids == want.outputs[0].token_ids
    assert have.outputs[0].stop_reason == stop


@pytest.mark.parametrize("method", ["ngram", "draft-other"])
def test_blocks_return_after_rejections_preemptions_and_aborts(
    method, small_target_dir, small_draft_dir, reference
) -> None:
    config = spec_configs(small_target_dir, small_draft_dir)[method]
    llm = make_llm(small_target_dir, config, num_blocks=12)  # 192 slots for 8 sequences
    assert token_ids(llm.generate(prompts(8), GREEDY)) == reference
    engine = llm.engine
    for i, p in enumerate(prompts(6, seed=5)):
        engine.add_request(f"a{i}", p, GREEDY)
    for _ in range(4):
        engine.step()
    engine.abort_request("a1")
    engine.abort_request("a4")
    while engine.has_unfinished_requests():
        engine.step()
    stats = engine.stats()
    assert stats.num_preemptions > 0
    assert stats.spec_decode_num_accepted_tokens < stats.spec_decode_num_draft_tokens
    assert stats.num_free_blocks == stats.num_total_blocks


def exact_pair_probs(folder, prompt: list[int]) -> torch.Tensor:
    """P(t2, t3) after a sampled t1, from Transformers: [V, V]."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    vocab = SMALL_VOCAB
    with torch.no_grad():
        p1 = model(torch.tensor([prompt])).logits[0, -1].softmax(-1)  # [V]
        ctx = torch.tensor([[*prompt, a] for a in range(vocab)])
        p2 = model(ctx).logits[:, -1].softmax(-1)  # [V(t1), V(t2)]
        ctx = torch.tensor([[*prompt, a, b] for a in range(vocab) for b in range(vocab)])
        p3 = model(ctx).logits[:, -1].softmax(-1).view(vocab, vocab, vocab)
    joint = p1[:, None, None] * p2[:, :, None] * p3  # [t1, t2, t3]
    return joint.sum(0)


@pytest.mark.parametrize("method", ["draft-other", "ngram"])
def test_sampling_keeps_the_target_distribution(method, small_target_dir, small_draft_dir):
    """Tokens 2 and 3 of 3, at temperature 1: token 2 is a verified draft (accepted, or
    resampled from the residual), token 3 the bonus or the next step's sample."""
    config = spec_configs(small_target_dir, small_draft_dir)[method]
    llm = make_llm(small_target_dir, config, max_num_seqs=256, max_waiting=4096)
    prompt = [3, 4, 5, 3, 4, 5, 3, 4]
    num_samples = 1500
    params = [SamplingParams(max_tokens=3, ignore_eos=True, seed=i) for i in range(num_samples)]
    outputs = token_ids(llm.generate([prompt] * num_samples, params))
    counts = torch.zeros(SMALL_VOCAB, SMALL_VOCAB)
    for out in outputs:
        counts[out[1], out[2]] += 1
    expected = exact_pair_probs(small_target_dir, prompt) * num_samples
    keep = expected.flatten() >= 5  # merge rare cells so that the test is valid
    observed = torch.cat([counts.flatten()[keep], counts.flatten()[~keep].sum()[None]])
    wanted = torch.cat([expected.flatten()[keep], expected.flatten()[~keep].sum()[None]])
    wanted *= observed.sum() / wanted.sum()
    assert chisquare(observed.numpy(), wanted.numpy()).pvalue > 1e-3
    stats = llm.engine.stats()
    assert stats.spec_decode_num_drafts > num_samples / 3
    assert 0 < stats.spec_decode_num_accepted_tokens < stats.spec_decode_num_draft_tokens
