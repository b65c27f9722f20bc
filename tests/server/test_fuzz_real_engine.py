"""Schemathesis against the app over the real SmolLM2-135M engine (generation routes) and
a fake embedder: valid and invalid inputs, including the sampling edges (tiny top_p and
temperature, extreme penalties and seeds), never produce a 5xx, and the engine is alive,
idle and holds no KV block at the end.

max_total_tokens keeps every generated case to a few tokens, so the run stays short.
"""

from __future__ import annotations

import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

from tests.server.conftest import LiveServer  # noqa: E402
from tests.server.fakes import FakeEmbedder  # noqa: E402
from tests.server.test_fuzz import assert_no_server_error, bounded  # noqa: E402
from warpserve.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig  # noqa: E402
from warpserve.engine.async_engine import AsyncLLM  # noqa: E402
from warpserve.server.app import create_app  # noqa: E402
from warpserve.server.config import ServerConfig  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration]
CONFIG = ServerConfig(max_total_tokens=32, max_input_tokens=24, request_timeout_s=60)
GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions", "/generate", "/generate_stream")
schema = schemathesis.openapi.from_dict(create_app(None, FakeEmbedder(), CONFIG).openapi())
schema = schema.include(path_regex="|".join(f"^{p}$" for p in GENERATION_PATHS))
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True
)
MAX_EXAMPLES = 20  # per operation: about a minute on two quiet cores


@pytest.fixture(scope="module")
def engine() -> AsyncLLM:
    config = EngineConfig(
        model=ModelConfig(model="smollm2-135m-instruct"),
        cache=CacheConfig(memory_gib=0.1),
        scheduler=SchedulerConfig(max_waiting=16, max_num_seqs=16),
    )
    engine = AsyncLLM.from_config(config)
    yield engine
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and engine.stats().num_running + engine.stats().num_waiting:
        time.sleep(0.05)
    stats = engine.stats()
    assert engine.is_alive and engine.liveness().num_restarts == 0
    assert (stats.num_running, stats.num_waiting) == (0, 0)
    assert stats.num_free_blocks == stats.num_total_blocks
    engine.shutdown()


@pytest.fixture(scope="module")
def server(engine: AsyncLLM) -> LiveServer:
    live = LiveServer(create_app(engine, FakeEmbedder(), CONFIG)).start()
    yield live
    live.stop()


@schema.parametrize()
@bounded(MAX_EXAMPLES)
def test_the_real_engine_gives_no_server_error(case, server: LiveServer) -> None:  # noqa: ANN001
    assert_no_server_error(case, server, timeout_s=60)
