"""Every route against the API key and the body limit, generated from `app.routes` so that a
new route is covered the day it lands; and the inputs that used to cost seconds of CPU or
GBs of memory (/rerank's query x texts, /tokenize's 4 MB, huge texts) refused fast, with
the process's memory flat across many of them."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from tests.server.conftest import LiveServer, start_server
from tests.server.fakes import FakeEmbedder, FakeEngine
from warpserve.server.config import ServerConfig
from warpserve.server.errors import HF_PATHS

KEY = "sk-test"
# docs/ARCHITECTURE.md and middleware.py: probes, scrapers and the API docs need no key.
OPEN_PATHS = {"/health", "/ready", "/metrics", "/docs", "/openapi.json"}
BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def secured() -> Iterator[LiveServer]:
    live = start_server(FakeEngine(), FakeEmbedder(), ServerConfig(api_keys=(KEY,)))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def limited() -> Iterator[LiveServer]:
    live = start_server(FakeEngine(), FakeEmbedder(), ServerConfig(max_request_bytes=BODY_LIMIT))
    yield live
    live.stop()


def endpoints(app) -> list[tuple[str, str]]:  # noqa: ANN001
    """(method, concrete path) for every route the app serves, path parameters filled."""
    return sorted(set(_walk(app.routes, "")))


def _walk(routes: list, prefix: str) -> Iterator[tuple[str, str]]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI >= 0.165 nests routers
        if included is not None:
            yield from _walk(included.routes, prefix + route.include_context.prefix)
            continue
        if not isinstance(route, APIRoute | Route):
            continue
        path = prefix + re.sub(r"\{[^}]+\}", "fake-model", route.path)
        for method in route.methods or ():
            if method != "HEAD":
                yield method, path


def is_hf(path: str) -> bool:
    return path == "/" or path.startswith("/models/") or path in HF_PATHS


def test_every_route_but_the_open_ones_needs_the_key(secured: LiveServer) -> None:
    pairs = endpoints(secured.app)
    assert ("POST", "/v1/chat/completions") in pairs and ("GET", "/health") in pairs
    assert len(pairs) >= 15  # the matrix covers the app, not an empty list
    with secured.client() as http:
        for method, path in pairs:
            body = {"json": {}} if method == "POST" else {}
            denied = http.request(method, path, **body)
            if path in OPEN_PATHS:
                assert denied.status_code != 401, (method, path)
                continue
            assert denied.status_code == 401, (method, path, denied.status_code)
            assert denied.headers["www-authenticate"] == "Bearer"
            shape = denied.json()
            assert ("error_type" in shape) if is_hf(path) else ("type" in shape["error"])
            for header in ({"Authorization": f"Bearer {KEY}"}, {"x-api-key": KEY}):
                allowed = http.request(method, path, headers=header, **body)
                assert allowed.status_code != 401, (method, path, header)
            wrong = http.request(method, path, headers={"Authorization": f"Bearer {KEY}x"})
            assert wrong.status_code == 401, (method, path)


def post_paths(app) -> list[str]:  # noqa: ANN001
    return sorted({path for method, path in endpoints(app) if method == "POST"})


def assert_413_in_shape(response: httpx.Response, path: str) -> None:
    assert response.status_code == 413, (path, response.status_code, response.text[:200])
    body = response.json()
    if is_hf(path):
        assert isinstance(body["error"], str) and body["error_type"] == "validation"
    else:
        assert body["error"]["type"] == "invalid_request_error"
    assert str(BODY_LIMIT) in str(body)


def test_every_post_route_refuses_a_large_body_declared_or_chunked(limited: LiveServer) -> None:
    paths = post_paths(limited.app)
    assert "/v1/embeddings" in paths and "/tokenize" in paths
    padding = "x" * (BODY_LIMIT + 10)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"inputs": "'
        for _ in range(BODY_LIMIT // 1000 + 2):
            yield b"x" * 1000
        yield b'"}'

    with limited.client() as http:
        for path in paths:
            declared = http.post(path, json={"inputs": padding, "input": padding})
            assert_413_in_shape(declared, path)
            chunked = http.post(
                path, content=chunks(), headers={"content-type": "application/json"}
            )
            assert_413_in_shape(chunked, path)
        assert http.post("/embed", json={"inputs": "still served"}).status_code == 200


def resident_bytes() -> int:
    """This process's RSS (the live server runs in it) after handing freed heap back to
    the OS: without the trim, glibc's arenas keep a few 3 MB bodies and RSS wanders by
    tens of MB; with it, it is flat to the MB unless something is kept."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: measure untrimmed
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Each of these used to be accepted and cost seconds of tokenizing or a pinned 4 MB key.
AMPLIFIERS = {
    "rerank_query": ("/rerank", {"query": "q " * 1_000_000, "texts": ["a doc"] * 200}, "query"),
    "rerank_texts": ("/rerank", {"query": "what", "texts": ["a doc"] * 2048}, "texts"),
    "tokenize": ("/tokenize", {"inputs": "word " * 780_000}, "inputs"),
    "embed_text": ("/embed", {"inputs": ["x " * 1_500_000]}, "inputs"),
    "openai_text": ("/v1/embeddings", {"input": "x " * 1_500_000}, "input"),
}


@pytest.mark.parametrize("case", sorted(AMPLIFIERS))
def test_amplifying_inputs_are_refused_fast_and_memory_stays_flat(case: str) -> None:
    path, body, field = AMPLIFIERS[case]
    embedder = FakeEmbedder(task="rerank") if path == "/rerank" else FakeEmbedder()
    live = start_server(FakeEngine(), embedder, ServerConfig())
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            for _ in range(3):  # warm-up: first-call allocations are not a leak
                http.post(path, json=body)
            before = resident_bytes()
            started = time.perf_counter()
            for _ in range(20):
                response = http.post(path, json=body)
                assert response.status_code in (400, 413), response.text[:300]
                assert field in response.text
            elapsed = (time.perf_counter() - started) / 20
            growth = resident_bytes() - before
        assert elapsed < 1.0, f"{case}: {elapsed:.2f} s per refusal"
        # a kept body (the old cache's 4 MB keys) would be 20 x 3 MB
        assert growth < 8 * 2**20, f"{case}: RSS grew {growth / 2**20:.1f} MB over 20"
        assert embedder.calls == []  # nothing reached the encoder
    finally:
        live.stop()


def test_limits_name_the_field_in_each_shape() -> None:
    config = ServerConfig(max_embedding_inputs=3, max_input_chars=50, max_tokenize_chars=40)
    live = start_server(FakeEngine(), FakeEmbedder(), config)
    try:
        with live.client() as http:
            many = http.post("/embed", json={"inputs": ["a", "b", "c", "d"]})
            assert many.status_code == 413 and "more than the limit of 3" in many.json()["error"]
            long = http.post("/v1/embeddings", json={"input": ["ok", "y" * 51]})
            assert long.status_code == 400
            assert long.json()["error"]["param"] == "input"
            assert "input[1] has 51 characters" in long.json()["error"]["message"]
            tokenize = http.post("/tokenize", json={"inputs": "z" * 41})
            assert tokenize.status_code == 413 and "inputs has 41" in tokenize.json()["error"]
            assert http.post("/tokenize", json={"inputs": "z" * 40}).status_code == 200
            assert http.post("/embed", json={"inputs": ["a", "b", "c"]}).status_code == 200
    finally:
        live.stop()
