"""Health, readiness, metrics, keys, CORS, size limits, timeouts, and engine failures."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.server.conftest import LiveServer, start_server, wait_until
from tests.server.fakes import FakeEmbedder, FakeEngine
from warpserve.server.config import ServerConfig

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


def test_health_runs_a_probe_and_answers_503_when_stalled_or_dead() -> None:
    engine = FakeEngine()
    live = start_server(engine, None, ServerConfig(health_timeout_s=0.2))
    try:
        with live.client() as http:
            assert http.get("/health").status_code == 200
            probes = len(engine.submitted)
            assert probes == 1 and engine.submitted[0][2].max_tokens == 1
            engine.is_stalled = True
            stalled = http.get("/health")
            assert stalled.status_code == 503, stalled.text
            assert stalled.json()["error"]["type"] == "service_unavailable_error"
            engine.is_stalled = False
            assert http.get("/health").status_code == 200
            engine.kill()
            assert http.get("/health").status_code == 503
            assert http.post(CHAT, json={"messages": USER}).status_code == 503
            assert http.get("/metrics").status_code == 200  # scrapes survive a dead engine
    finally:
        live.stop()


def test_engine_death_mid_stream_ends_with_an_error_event() -> None:
    engine = FakeEngine(step_s=0.02)
    live = start_server(engine)
    try:
        with live.client() as http:
            body = {"messages": USER, "max_tokens": 100, "stream": True}
            with http.stream("POST", CHAT, json=body) as response:
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
                engine.kill()
                rest = [line for line in lines if line]
    finally:
        live.stop()
    assert '"type":"service_unavailable_error"' in rest[-2]
    assert rest[-1] == "data: [DONE]"


def test_metrics_expose_vllm_style_names(server: LiveServer, http: httpx.Client) -> None:
    assert http.post(CHAT, json={"messages": USER, "max_tokens": 3}).status_code == 200
    text = http.get("/metrics").text
    for name in [
        "warpserve:time_to_first_token_seconds_count",
        "warpserve:inter_token_latency_seconds_count",
        "warpserve:e2e_request_latency_seconds_count",
        "warpserve:request_queue_time_seconds_count",
        "warpserve:num_requests_running",
        "warpserve:num_requests_waiting",
        "warpserve:kv_cache_usage_perc",
        "warpserve:prefix_cache_hit_rate",
        "warpserve:num_preemptions_total",
        "warpserve:spec_decode_num_accepted_tokens_total",
        "warpserve:prompt_tokens_total",
        "warpserve:generation_tokens_total",
        'warpserve:request_success_total{finished_reason="length",model_name="fake-model"}',
    ]:
        assert name in text, name
    count = next(
        line
        for line in text.splitlines()
        if line.startswith("warpserve:e2e_request_latency_seconds_count")
    )
    assert float(count.split()[-1]) >= 1


def test_ready_and_info(http: httpx.Client) -> None:
    assert http.get("/ready").json() == {"status": "ready"}
    info = http.get("/info").json()
    assert info["model_id"] == "fake-model" and info["max_total_tokens"] == 256


@pytest.fixture(scope="module")
def secured() -> LiveServer:
    config = ServerConfig(api_keys=("k1", "k2"), cors_origins=("http://app.example",))
    live = start_server(FakeEngine(), FakeEmbedder(), config)
    yield live
    live.stop()


def test_api_keys(secured: LiveServer) -> None:
    with secured.client() as http:
        denied = http.post(CHAT, json={"messages": USER})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "invalid_api_key"
        wrong = http.post(CHAT, json={"messages": USER}, headers={"Authorization": "Bearer k3"})
        assert wrong.status_code == 401
        hf_denied = http.post("/generate", json={"inputs": "x"})
        assert hf_denied.status_code == 401 and "error_type" in hf_denied.json()
        assert http.get("/health").status_code == 200
        assert http.get("/metrics").status_code == 200
        ok = http.post("/embed", json={"inputs": "x"}, headers={"x-api-key": "k2"})
        assert ok.status_code == 200
    client = openai.OpenAI(base_url=f"{secured.url}/v1", api_key="k1", max_retries=0)
    assert client.chat.completions.create(model="fake-model", messages=USER, max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{secured.url}/v1", api_key="no", max_retries=0).models.list()


def test_cors_preflight_and_headers_on_errors(secured: LiveServer) -> None:
    origin = {"Origin": "http://app.example"}
    with secured.client() as http:
        preflight = http.options(
            CHAT,
            headers={
                **origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
        denied = http.post(CHAT, json={"messages": USER}, headers=origin)
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == "http://app.example"
        other = http.options(
            CHAT, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_request_size_limit() -> None:
    live = start_server(FakeEngine(), None, ServerConfig(max_request_bytes=1000))
    try:
        with live.client() as http:
            big = {"messages": [{"role": "user", "content": "x" * 2000}]}
            declared = http.post(CHAT, json=big)
            assert declared.status_code == 413, declared.text
            assert declared.json()["error"]["type"] == "invalid_request_error"

            def chunks():  # noqa: ANN202 - no Content-Length: the body is counted as it comes
                yield b'{"messages": [{"role": "user", "content": "'
                for _ in range(20):
                    yield b"x" * 100
                yield b'"}]}'

            chunked = http.post(
                CHAT, content=chunks(), headers={"content-type": "application/json"}
            )
            assert chunked.status_code == 413, chunked.text
            assert http.post(CHAT, json={"messages": USER, "max_tokens": 1}).status_code == 200
    finally:
        live.stop()


def test_request_timeout_aborts_the_generation() -> None:
    engine = FakeEngine(step_s=0.05)
    live = start_server(engine, None, ServerConfig(request_timeout_s=0.3))
    try:
        with live.client() as http:
            slow = http.post(CHAT, json={"messages": USER, "max_tokens": 200})
            assert slow.status_code == 504 and slow.json()["error"]["type"] == "timeout_error"
            body = {"messages": USER, "max_tokens": 200, "stream": True}
            lines = [line for line in http.post(CHAT, json=body).text.splitlines() if line]
            assert '"type":"timeout_error"' in lines[-2] and lines[-1] == "data: [DONE]"
            assert wait_until(lambda: len(engine.aborted_ids) == 2)  # at the next step
            assert engine.num_free_blocks == engine.num_total_blocks
    finally:
        live.stop()
