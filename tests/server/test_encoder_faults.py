"""The encoder routes over the real `EmbeddingService` (a tiny BERT on PyTorch) when its
model fails or stalls: the request that met the failure gets a 503 and the next a 200;
a request past `encoder_timeout_s` gets a 504 in its route's shape and its queued texts
never run; encoder calls hold concurrency tickets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from tests.encoder.conftest import build_tiny_encoder
from tests.server.conftest import LiveServer, wait_until
from warpserve.encoder.config import BatcherConfig, ServiceConfig
from warpserve.encoder.service import EmbeddingService
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddingService]:
    folder = build_tiny_encoder(tmp_path_factory.mktemp("encoder") / "mean")
    config = ServiceConfig(num_threads=1, variant="torch-fp32", batcher=BatcherConfig())
    service = EmbeddingService.start(str(folder), "embed", config)
    yield service
    service.close()


class Backend:
    """Wraps the service's model: fails or holds forward passes on demand, counts rows."""

    def __init__(self, service: EmbeddingService) -> None:
        self._real_run = service._backend.run
        self.failures: list[str] = []
        self.num_rows: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(timeout=30)
        self.num_rows.append(int(inputs["input_ids"].shape[0]))
        rows = self._real_run(inputs)
        failure = self.failures.pop(0) if self.failures else None
        if failure == "raise":
            raise RuntimeError("onnxruntime: kernel failed")
        if failure == "short":  # broke the worker thread before: outside its try block
            return rows[:-1]
        return rows


@pytest.fixture
def backend(service: EmbeddingService, monkeypatch: pytest.MonkeyPatch) -> Backend:
    fake = Backend(service)
    monkeypatch.setattr(service._backend, "run", fake.run)
    return fake


def serve(service: EmbeddingService, **config) -> LiveServer:  # noqa: ANN003
    return LiveServer(create_app(None, service, ServerConfig(**config))).start()


@pytest.fixture(scope="module")
def live(service: EmbeddingService) -> Iterator[LiveServer]:
    server = serve(service)
    yield server
    server.stop()


@pytest.mark.parametrize("failure", ["raise", "short"])
def test_a_model_failure_is_a_503_and_the_next_request_succeeds(
    live: LiveServer, backend: Backend, service: EmbeddingService, failure: str
) -> None:
    backend.failures = [failure]
    with live.client() as http:
        failed = http.post("/embed", json={"inputs": ["the dog", "the cat sat"]})
        assert failed.status_code == 503
        assert "failed on this request" in failed.json()["error"]
        assert service.is_alive()
        ok = http.post("/embed", json={"inputs": ["the dog", "the cat sat"]})
        assert ok.status_code == 200 and len(ok.json()) == 2
        openai = http.post("/v1/embeddings", json={"input": "the dog"})
        assert openai.status_code == 200
    assert service.last_success_at is not None


def test_past_the_deadline_a_504_and_the_queued_texts_never_run(
    service: EmbeddingService, backend: Backend
) -> None:
    backend.gate.clear()
    server = serve(service, encoder_timeout_s=0.3)
    try:
        with server.client() as http, ThreadPoolExecutor(1) as pool:
            first = pool.submit(http.post, "/embed", json={"inputs": "the dog"})
            assert backend.entered.wait(timeout=10)  # the worker holds the first pass
            late = http.post("/embed", json={"inputs": ["stocks fell"] * 5})
            assert late.status_code == 504
            assert late.json()["error_type"] == "timeout"
            late_openai = http.post("/v1/embeddings", json={"input": ["stocks fell"] * 3})
            assert late_openai.status_code == 504
            assert late_openai.json()["error"]["type"] == "timeout_error"
            assert first.result().status_code == 504
            backend.gate.set()
            assert wait_until(lambda: backend.num_rows == [1], 5)
            ok = http.post("/embed", json={"inputs": "the cat"})
        assert ok.status_code == 200
        assert backend.num_rows == [1, 1]  # the 8 expired texts cost no forward pass
        assert server.app.state.warpserve.num_in_flight == 0
    finally:
        backend.gate.set()
        server.stop()


def test_encoder_calls_hold_a_concurrency_ticket(
    service: EmbeddingService, backend: Backend
) -> None:
    backend.gate.clear()
    server = serve(service, max_concurrent_requests=1)
    try:
        with server.client() as http, ThreadPoolExecutor(1) as pool:
            first = pool.submit(http.post, "/embed", json={"inputs": "the dog"})
            assert backend.entered.wait(timeout=10)
            refused = http.post("/embed", json={"inputs": "the cat"})
            assert refused.status_code == 429 and refused.headers["Retry-After"]
            backend.gate.set()
            assert first.result().status_code == 200
            assert http.post("/embed", json={"inputs": "the cat"}).status_code == 200
        assert server.app.state.warpserve.num_in_flight == 0
    finally:
        backend.gate.set()
        server.stop()


def test_a_closed_service_is_not_alive_and_answers_503(tmp_path) -> None:  # noqa: ANN001
    folder = build_tiny_encoder(tmp_path / "mean")
    config = ServiceConfig(num_threads=1, variant="torch-fp32")
    service = EmbeddingService.start(str(folder), "embed", config)
    assert service.is_alive()
    service.close()
    assert not service.is_alive()
    server = serve(service)
    try:
        response = httpx.post(f"{server.url}/embed", json={"inputs": "the dog"}, timeout=10)
        assert response.status_code == 503
    finally:
        server.stop()
