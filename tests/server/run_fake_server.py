"""`python -m tests.server.run_fake_server PORT [MODEL_DIR]`: the real serve loop around a
fake engine (or, given MODEL_DIR, the real AsyncLLM over that model), in its own process,
so a test can send it SIGTERM."""

from __future__ import annotations

import sys

from tests.server.fakes import FakeEngine
from warpserve.commands.serve import serve
from warpserve.config import EngineConfig, ModelConfig
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig


def main(argv: list[str]) -> None:
    config = ServerConfig(port=int(argv[0]), drain_timeout_s=10.0)
    if len(argv) > 1:
        from warpserve.engine.async_engine import AsyncLLM

        engine = AsyncLLM.from_config(EngineConfig(model=ModelConfig(model=argv[1], num_threads=1)))
        try:
            serve(create_app(engine, None, config), config)
        finally:
            engine.shutdown()
        return
    serve(create_app(FakeEngine(step_s=0.03), None, config), config)


if __name__ == "__main__":
    main(sys.argv[1:])
