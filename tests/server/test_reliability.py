"""No client can take the server down: the real AsyncLLM over a tiny Llama behind the
real app, on loopback. Hang-ups at every moment, batches with a bad member, overload,
parameters at their edges, a faulty step, a dead loop, a stalled step, slow readers and
SIGTERM. After each test: no unexpected 5xx, the engine alive, nothing in flight, and
every KV block free (`assert_clean`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.engine.test_engine_faults import FaultyRunner, assert_clean
from tests.server.conftest import LiveServer, wait_until
from tests.server.test_real_engine import start_engine
from warpserve.engine.async_engine import AsyncLLM
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig
from warpserve.server.sse import StallGuardedResponse

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The quick brown fox"
GREEDY_BODY = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def engine(tiny_llama_dir):  # noqa: ANN001, ANN201
    engine = start_engine(tiny_llama_dir, max_waiting=8, max_num_seqs=8)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def faulty(engine: AsyncLLM) -> FaultyRunner:
    return FaultyRunner(engine, step_s=0.002)


@pytest.fixture(scope="module")
def live(engine: AsyncLLM, faulty: FaultyRunner):  # noqa: ANN201
    config = ServerConfig(retry_after_s=2, max_total_tokens=256, health_timeout_s=1.0)
    server = LiveServer(create_app(engine, None, config)).start()
    yield server
    server.stop()


@pytest.fixture
def http(live: LiveServer, engine: AsyncLLM):  # noqa: ANN201
    with httpx.Client(base_url=live.url, timeout=30) as client:
        yield client
        assert_clean(engine)
        assert live.app.state.warpserve.num_in_flight == 0
        assert client.get("/health").status_code == 200


def greedy_text(http: httpx.Client) -> str:
    response = http.post("/v1/completions", json=GREEDY_BODY)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


ROUTES = [
    ("/v1/completions", {"prompt": PROMPT, "max_tokens": 40, "ignore_eos": True}),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": 40, "ignore_eos": True},
    ),
    ("/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 40}}),
    ("/generate_stream", {"inputs": PROMPT, "parameters": {"max_new_tokens": 40}}),
]


def post_then_reset(port: int, path: str, body: dict, read_bytes: int) -> None:
    """Send a request; read up to read_bytes of the answer; then drop the connection with
    an RST (SO_LINGER 0), as a client that crashes or times out would."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    sock.sendall(head.encode() + data)
    received = 0
    while received < read_bytes:
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += len(chunk)
    sock.close()


def test_200_hang_ups_at_every_moment_leave_the_engine_serving(
    http: httpx.Client, live: LiveServer
) -> None:
    expected = greedy_text(http)
    for i in range(200):
        path, body = ROUTES[i % len(ROUTES)]
        stream = path.startswith("/v1/") and i % 8 >= 4
        body = {**body, "stream": True} if stream else body
        # 0: before any answer; 1: after the first bytes (headers or first token)
        post_then_reset(live.port, path, body, read_bytes=(i // 4) % 2)
    assert greedy_text(http) == expected


def test_batch_with_one_bad_prompt_admits_nothing(http: httpx.Client, faulty: FaultyRunner) -> None:
    steps = faulty.num_steps
    response = http.post("/v1/completions", json={"prompt": [[1, 2, 3], [300000]]})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"
    assert faulty.num_steps == steps  # refused before anything ran


def test_more_sequences_than_the_queue_holds_is_429_with_nothing_left(
    http: httpx.Client,
) -> None:
    body = {"prompt": [PROMPT] * 6, "n": 3, "max_tokens": 30, "ignore_eos": True}
    responses = [http.post("/v1/completions", json=body) for _ in range(3)]
    assert {r.status_code for r in responses} == {429}
    assert all(r.headers["retry-after"] == "2" for r in responses)


def test_too_many_sequences_per_request_is_400(http: httpx.Client) -> None:
    body = {"prompt": [PROMPT] * 8, "n": 16, "max_tokens": 2}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400 and "sequences" in response.json()["error"]["message"]


EDGES = [
    ({"temperature": 1e-50}, "greedy"),
    ({"temperature": -0.0}, "greedy"),
    ({"temperature": float("nan")}, 400),
    ({"top_p": 5e-324}, "greedy"),
    ({"top_p": 5e-324, "top_k": 1, "min_p": 5e-324}, "greedy"),
    ({"repetition_penalty": 1e-300}, 400),
    ({"presence_penalty": 1e-300, "frequency_penalty": -1e-300}, 200),
    ({"seed": 2**63 - 1, "n": 2}, 200),
    ({"seed": -(2**63)}, 200),
    ({"seed": 2**64}, 400),
    ({"logprobs": 21}, 400),
    ({"logit_bias": {str(i): 1.0 for i in range(1000)}}, 400),
    ({"logit_bias": {"1e3": 1.0}}, 400),
    ({"logit_bias": {"-1": 1.0}}, 400),
    ({"logit_bias": {"100000": 1.0}}, 400),
    ({"stop": [""]}, 400),
    ({"stop": ["x" * 2000]}, 400),
    ({"stop": [chr(ord("a") + i) * 1024 for i in range(16)]}, 200),
    ({"stop": [str(i) for i in range(17)]}, 400),
    ({"max_tokens": 0}, 400),
    ({"max_tokens": 2**63}, 400),
    ({"max_tokens": 2**63 - 1}, 400),
    ({"prompt": [3, 400000]}, 400),
    ({"prompt": []}, 400),
    ({"prompt": [[]]}, 400),
    ({"prompt": "x" * 300_000}, 400),
    ({"stop_token_ids": [10**12]}, 400),
]


@pytest.mark.parametrize(("change", "expect"), EDGES, ids=[str(i) for i in range(len(EDGES))])
def test_parameter_edges_are_4xx_or_equal_to_greedy(
    http: httpx.Client, change: dict, expect: object
) -> None:
    body = {**GREEDY_BODY, "temperature": 1.0, **change}
    response = http.post(
        "/v1/completions", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    if expect == 400:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["message"]
        return
    assert response.status_code == 200, response.text
    if expect == "greedy":
        assert response.json()["choices"][0]["text"] == greedy_text(http)


def test_a_faulty_step_fails_its_request_with_500_and_the_next_succeeds(
    http: httpx.Client, faulty: FaultyRunner
) -> None:
    faulty.mark = 7
    try:
        failed = http.post("/v1/completions", json={"prompt": [5, 7, 9], "max_tokens": 4})
    finally:
        faulty.mark = None
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "engine_error"
    greedy_text(http)


def test_a_dead_loop_answers_503_then_restarts(
    http: httpx.Client, faulty: FaultyRunner, engine: AsyncLLM
) -> None:
    restarts = engine.liveness().num_restarts
    faulty.die = True
    try:
        dead = http.post("/v1/completions", json=GREEDY_BODY)
    finally:
        faulty.die = False
    assert dead.status_code == 503 and dead.headers["retry-after"] == "2"
    assert wait_until(lambda: http.get("/ready").status_code == 200, 5)
    greedy_text(http)
    metrics = http.get("/metrics").text
    assert "warpserve:engine_restarts_total{model_name=" in metrics
    assert engine.liveness().num_restarts == restarts + 1


def test_health_answers_503_during_a_stalled_step_and_recovers(
    http: httpx.Client, faulty: FaultyRunner, live: LiveServer
) -> None:
    faulty.running.clear()
    try:

        async def during_stall() -> tuple[int, int]:
            async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
                stuck = asyncio.ensure_future(client.post("/v1/completions", json=GREEDY_BODY))
                await asyncio.sleep(1.5)  # past health_timeout_s = 1
                health = (await client.get("/health")).status_code
                faulty.running.set()
                return health, (await stuck).status_code

        health, stuck = asyncio.run(during_stall())
    finally:
        faulty.running.set()
    assert (health, stuck) == (503, 200)
    assert wait_until(lambda: http.get("/health").status_code == 200, 5)


def test_a_reader_that_stops_reading_is_dropped_and_its_body_closed() -> None:
    closed = asyncio.Event()

    async def body():  # noqa: ANN202
        try:
            for i in range(1000):
                yield f"data: {i}\n\n"
        finally:
            closed.set()

    async def main() -> None:
        sent = []

        async def send(message: dict) -> None:
            sent.append(message)
            if len(sent) > 3:
                await asyncio.sleep(3600)  # the socket's buffers are full: the client stopped

        response = StallGuardedResponse(body(), write_stall_s=0.1, media_type="text/event-stream")
        await asyncio.wait_for(response.stream_response(send), 5)
        assert closed.is_set() and len(sent) == 4

    asyncio.run(main())


def test_sigterm_while_streaming_with_hang_ups_finishes_in_flight_and_exits_0(
    tiny_llama_dir: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.server.run_fake_server", str(port), str(tiny_llama_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    body = {"prompt": PROMPT, "max_tokens": 200, "ignore_eos": True, "stream": True}

    async def clients() -> list[list[str]]:
        async def one(index: int) -> list[str]:
            async with (
                httpx.AsyncClient(base_url=url, timeout=60) as client,
                client.stream("POST", "/v1/completions", json=body) as response,
            ):
                lines = []
                async for line in response.aiter_lines():
                    if line:
                        lines.append(line)
                    if index % 2 and len(lines) == 2:
                        return lines  # hangs up mid-stream
                    if len(lines) == 3 and index == 0:
                        proc.send_signal(signal.SIGTERM)
                return lines

        return await asyncio.gather(*(one(i) for i in range(6)))

    try:
        assert wait_until(lambda: _is_ready(url), 60.0), "the server did not start"
        results = asyncio.run(clients())
        assert proc.wait(timeout=30) == 0, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for index, lines in enumerate(results):
        if index % 2 == 0:  # those that stayed got every token and the end
            assert lines[-1] == "data: [DONE]"
            assert '"finish_reason":"length"' in lines[-2]


def _is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_health_covers_the_embedding_service_and_ready_the_engine_loop() -> None:
    from tests.server.fakes import FakeEmbedder, FakeEngine

    engine, embedder = FakeEngine(), FakeEmbedder()
    server = LiveServer(create_app(engine, embedder, ServerConfig())).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/health").status_code == 200
            embedder.is_dead = True
            assert client.get("/health").status_code == 503
            embedder.is_dead = False
            assert client.get("/ready").status_code == 200
            engine.kill()
            assert client.get("/ready").status_code == 503
            assert client.get("/health").status_code == 503
            assert (
                'warpserve:engine_alive{model_name="fake-model"} 0.0' in client.get("/metrics").text
            )
    finally:
        server.stop()
