"""The official `openai` client, unmodified, against the live server (fake engine)."""

from __future__ import annotations

import numpy as np
import openai
import pytest

from tests.server.conftest import LiveServer

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]


@pytest.fixture(scope="module")
def client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_lists_both_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["fake-model", "fake-embed"]


def test_completion_counts_usage_and_stops_at_max_tokens(client: openai.OpenAI) -> None:
    out = client.completions.create(model="fake-model", prompt="hello", max_tokens=7)
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == 6  # BOS, then one toy token per byte
    assert out.usage.completion_tokens == 7
    assert out.usage.total_tokens == 13
    assert len(out.choices[0].text) == 7


def test_chat_uses_the_template_and_roles(client: openai.OpenAI, engine) -> None:  # noqa: ANN001
    out = client.chat.completions.create(model="fake-model", messages=MESSAGES, max_tokens=4)
    assert out.choices[0].message.role == "assistant"
    prompt_ids = engine.submitted[-1][1]
    expected = engine.tokenizer.apply_chat_template(MESSAGES)
    assert engine.tokenizer.decode(prompt_ids) == expected
    assert out.usage.prompt_tokens == len(expected.encode())


def test_n_returns_distinct_indexed_choices(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="fake-model", messages=MESSAGES, max_tokens=8, n=2, seed=3, temperature=1.0
    )
    assert [c.index for c in out.choices] == [0, 1]
    assert out.choices[0].message.content != out.choices[1].message.content
    assert out.usage.completion_tokens == 16


def test_stop_string_is_cut(client: openai.OpenAI) -> None:
    full = client.completions.create(model="fake-model", prompt="abc", max_tokens=12, temperature=0)
    stop = full.choices[0].text[4:6]
    out = client.completions.create(
        model="fake-model", prompt="abc", max_tokens=12, temperature=0, stop=[stop]
    )
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].text == full.choices[0].text[: full.choices[0].text.find(stop)]


def test_logprobs_and_top_logprobs(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="fake-model", messages=MESSAGES, max_tokens=5, logprobs=True, top_logprobs=3
    )
    content = out.choices[0].logprobs.content
    assert "".join(t.token for t in content) == out.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)
    legacy = client.completions.create(model="fake-model", prompt="hi", max_tokens=4, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert lp.text_offset == [0, 1, 2, 3]


@pytest.mark.parametrize("n", [1, 2])
def test_streamed_text_equals_non_streamed_for_the_same_seed(client: openai.OpenAI, n: int) -> None:
    kwargs = dict(model="fake-model", messages=MESSAGES, max_tokens=10, n=n, seed=11)
    full = client.chat.completions.create(**kwargs)
    texts = [""] * n
    reasons: list[str | None] = [None] * n
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            reasons[choice.index] = choice.finish_reason or reasons[choice.index]
    assert texts == [c.message.content for c in full.choices]
    assert reasons == [c.finish_reason for c in full.choices]


def test_streamed_completion_with_stop_equals_non_streamed(client: openai.OpenAI) -> None:
    kwargs = dict(model="fake-model", prompt="xyz", max_tokens=20, seed=5, stop=["k", "q "])
    full = client.completions.create(**kwargs)
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs))
    assert streamed == full.choices[0].text


def test_stream_include_usage_sends_a_last_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="fake-model",
            messages=MESSAGES,
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


def test_batch_prompts_index_prompt_major(client: openai.OpenAI) -> None:
    out = client.completions.create(model="fake-model", prompt=["a", "bb"], max_tokens=2, n=2)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert out.usage.prompt_tokens == 2 + 3  # each with its BOS


def test_max_completion_tokens_wins(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="fake-model", messages=MESSAGES, max_tokens=9, max_completion_tokens=2
    )
    assert out.usage.completion_tokens == 2


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    as_base64 = client.embeddings.create(model="fake-embed", input=["one", "two"])  # client default
    as_float = client.embeddings.create(
        model="fake-embed", input=["one", "two"], encoding_format="float"
    )
    assert [d.index for d in as_float.data] == [0, 1]
    for a, b in zip(as_base64.data, as_float.data, strict=True):
        np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-6)
    assert np.linalg.norm(as_float.data[0].embedding) == pytest.approx(1.0, rel=1e-5)
    assert as_float.usage.prompt_tokens == 2


def test_errors_arrive_as_typed_openai_exceptions(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="nope", prompt="hi")
    assert info.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fake-model", messages=MESSAGES, top_p=1.5)
    assert info.value.body["param"] == "top_p"
