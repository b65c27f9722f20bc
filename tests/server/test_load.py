"""Backpressure (429), client disconnects freeing KV blocks, graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server.conftest import start_server, wait_until
from tests.server.fakes import FakeEngine
from warpserve.server.config import ServerConfig

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 30}
ROOT = Path(__file__).resolve().parents[2]


async def _fire(url: str, count: int, stream: bool) -> list[tuple[int, float, httpx.Response]]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def one() -> tuple[int, float, httpx.Response]:
            start = time.perf_counter()
            response = await client.post(CHAT, json={**BODY, "stream": stream})
            return response.status_code, time.perf_counter() - start, response

        return await asyncio.gather(*(one() for _ in range(count)))


def _check_overload(results: list[tuple[int, float, httpx.Response]], max_admitted: int) -> None:
    ok = [r for status, _, r in results if status == 200]
    refused = [(elapsed, r) for status, elapsed, r in results if status == 429]
    assert len(ok) + len(refused) == len(results)
    assert 1 <= len(ok) <= max_admitted and len(refused) >= len(results) - max_admitted
    for elapsed, response in refused:
        assert elapsed < 0.3  # refused at once, not after the admitted ones finish
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    for response in ok:  # the admitted ones ran to the end
        if response.headers["content-type"].startswith("application/json"):
            assert response.json()["usage"]["completion_tokens"] == 30
        else:
            assert response.text.rstrip().endswith("data: [DONE]")
            assert '"finish_reason":"length"' in response.text


def test_engine_queue_full_answers_429_while_admitted_requests_finish() -> None:
    engine = FakeEngine(max_running=2, max_waiting=2, step_s=0.02)
    live = start_server(engine)
    try:
        _check_overload(asyncio.run(_fire(live.url, 10, stream=False)), max_admitted=4)
        _check_overload(asyncio.run(_fire(live.url, 10, stream=True)), max_admitted=4)
        with live.client() as http:
            assert "warpserve:request_rejected_total" in http.get("/metrics").text
    finally:
        live.stop()
    assert engine.num_free_blocks == engine.num_total_blocks


def test_server_concurrency_bound_answers_429() -> None:
    engine = FakeEngine(max_running=16, max_waiting=16, step_s=0.02)
    live = start_server(engine, None, ServerConfig(max_concurrent_requests=3))
    try:
        results = asyncio.run(_fire(live.url, 8, stream=False))
    finally:
        live.stop()
    assert sorted(status for status, _, _ in results) == [200] * 3 + [429] * 5


def _raw_request(port: int, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_client_disconnect_mid_stream_frees_kv_blocks_within_a_second() -> None:
    engine = FakeEngine(step_s=0.02)
    live = start_server(engine)
    try:
        body = (
            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "stream": true}'
        )
        sock = _raw_request(live.port, body)
        received = b""
        while received.count(b"data: ") < 3:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        assert engine.num_free_blocks < engine.num_total_blocks
        sock.close()
        closed_at = time.perf_counter()
        assert wait_until(lambda: engine.num_free_blocks == engine.num_total_blocks, 1.0)
        assert time.perf_counter() - closed_at < 1.0
        assert len(engine.aborted_ids) == 1
    finally:
        live.stop()


def test_client_disconnect_while_waiting_for_a_full_response_aborts() -> None:
    engine = FakeEngine(step_s=0.02)
    live = start_server(engine)
    try:
        sock = _raw_request(
            live.port, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}'
        )
        assert wait_until(lambda: engine.num_free_blocks < engine.num_total_blocks)
        sock.close()
        assert wait_until(lambda: engine.num_free_blocks == engine.num_total_blocks, 1.0)
        assert len(engine.aborted_ids) == 1
    finally:
        live.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_drains_in_flight_requests_then_exits() -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.server.run_fake_server", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _is_up(url), 20.0), "the server did not start"
        with httpx.Client(base_url=url, timeout=10) as http:
            body = {**BODY, "max_tokens": 40, "stream": True}  # ~1.2 s at 30 ms a step
            with http.stream("POST", CHAT, json=body) as response:
                lines = response.iter_lines()
                assert next(lines).startswith("data: ")
                proc.send_signal(signal.SIGTERM)
                time.sleep(0.2)
                assert not _is_up(url)  # no new connections while draining
                rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]" and '"finish_reason":"length"' in rest[-2]
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _is_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/ready", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
