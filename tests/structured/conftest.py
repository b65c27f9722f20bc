"""SmolLM2-135M-Instruct behind the real server, shared by the structured-output tests."""

from __future__ import annotations

import openai
import pytest

from tests.server.conftest import LiveServer
from warpserve.config import CacheConfig, EngineConfig, ModelConfig
from warpserve.engine.async_engine import AsyncLLM
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def smol_engine() -> AsyncLLM:
    config = EngineConfig(
        model=ModelConfig(model=MODEL, num_threads=1), cache=CacheConfig(memory_gib=0.25)
    )
    engine = AsyncLLM.from_config(config)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="session")
def smol_server(smol_engine: AsyncLLM) -> LiveServer:
    server = LiveServer(create_app(smol_engine, None, ServerConfig())).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client(smol_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{smol_server.url}/v1", api_key="unused", max_retries=0)
