"""The server over the real AsyncLLM and a tiny random-init Llama (tests/conftest.py), with
the official `openai` and `huggingface_hub` clients."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import openai
import pytest
from huggingface_hub import InferenceClient

from tests.server.conftest import LiveServer, wait_until
from warpserve.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from warpserve.engine.async_engine import AsyncLLM
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig

BLOCK_BYTES = 2 * 2 * 16 * 2 * 16 * 4  # K+V x layers x block_size x kv heads x head_dim x fp32
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "The quick brown fox"},
]


def start_engine(folder, max_waiting: int = 64, max_num_seqs: int = 64) -> AsyncLLM:  # noqa: ANN001
    config = EngineConfig(
        model=ModelConfig(model=str(folder), num_threads=1),
        cache=CacheConfig(memory_gib=256 * BLOCK_BYTES / 2**30),
        scheduler=SchedulerConfig(max_waiting=max_waiting, max_num_seqs=max_num_seqs),
    )
    return AsyncLLM.from_config(config)


@pytest.fixture(scope="module")
def real_engine(tiny_llama_dir) -> AsyncLLM:  # noqa: ANN001
    engine = start_engine(tiny_llama_dir)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def live(real_engine: AsyncLLM) -> LiveServer:
    server = LiveServer(create_app(real_engine, None, ServerConfig())).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)


def model_id(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def test_completion_and_chat(client: openai.OpenAI, real_engine: AsyncLLM) -> None:
    name = model_id(client)
    out = client.completions.create(
        model=name,
        prompt="The quick brown fox",
        max_tokens=8,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert out.usage.completion_tokens == 8 and out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(real_engine.tokenizer.encode("The quick brown fox"))
    chat = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=6)
    expected = real_engine.tokenizer.apply_chat_template(MESSAGES)
    prompt_ids = real_engine.tokenizer.encode(expected, add_special_tokens=False)
    assert chat.usage.prompt_tokens == len(prompt_ids)


@pytest.mark.parametrize("n", [1, 2])
def test_streamed_equals_non_streamed_for_the_same_seed(client: openai.OpenAI, n: int) -> None:
    kwargs = dict(
        model=model_id(client), messages=MESSAGES, max_tokens=16, n=n, seed=7, temperature=1.0
    )
    full = client.chat.completions.create(**kwargs)
    texts = [""] * n
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [c.message.content for c in full.choices]
    again = client.chat.completions.create(**kwargs)
    assert [c.message.content for c in again.choices] == texts


def test_stop_and_logprobs(client: openai.OpenAI) -> None:
    name = model_id(client)
    base = dict(model=name, prompt="Paged attention keeps", max_tokens=16, temperature=0)
    full = client.completions.create(**base, logprobs=2).choices[0]
    assert len(full.logprobs.tokens) == len(full.logprobs.token_logprobs) > 0
    assert all(len(top) <= 2 for top in full.logprobs.top_logprobs)
    if len(full.text) > 6:
        stop = full.text[3:6]
        cut = client.completions.create(**base, stop=[stop]).choices[0]
        assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(stop)]


def test_tgi_stream_equals_non_stream(live: LiveServer) -> None:
    tgi = InferenceClient(model=live.url)
    kwargs = dict(max_new_tokens=12, seed=3, do_sample=True)
    full = tgi.text_generation("The quick brown fox", **kwargs)
    streamed = "".join(tgi.text_generation("The quick brown fox", stream=True, **kwargs))
    assert streamed == full


def test_health_and_metrics(live: LiveServer) -> None:
    with live.client() as http:
        assert http.get("/health").status_code == 200
        text = http.get("/metrics").text
    assert "warpserve:kv_cache_usage_perc" in text
    assert "warpserve:time_to_first_token_seconds_count" in text


def test_disconnect_mid_stream_frees_kv_blocks(live: LiveServer, real_engine: AsyncLLM) -> None:
    total = real_engine.stats().num_total_blocks
    body = (
        b'{"prompt": "The quick brown fox", "max_tokens": 400, "stream": true, "ignore_eos": true}'
    )
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    received = b""
    while received.count(b"data: ") < 3:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200")
    assert real_engine.stats().num_free_blocks < total
    sock.close()
    closed_at = time.perf_counter()
    assert wait_until(lambda: real_engine.stats().num_free_blocks == total, 1.0)
    assert time.perf_counter() - closed_at < 1.0


def test_overload_answers_429_while_admitted_finish(tiny_llama_dir) -> None:  # noqa: ANN001
    engine = start_engine(tiny_llama_dir, max_waiting=2, max_num_seqs=2)
    server = LiveServer(create_app(engine, None, ServerConfig())).start()

    async def fire() -> list[httpx.Response]:
        body = {"prompt": "The quick brown fox", "max_tokens": 64, "ignore_eos": True}
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            return await asyncio.gather(
                *(http.post("/v1/completions", json=body) for _ in range(12))
            )

    try:
        responses = asyncio.run(fire())
    finally:
        server.stop()
        engine.shutdown()
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses
    assert all(r.headers["retry-after"] for r in responses if r.status_code == 429)
    assert all(
        r.json()["usage"]["completion_tokens"] == 64 for r in responses if r.status_code == 200
    )
