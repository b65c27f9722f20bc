"""`python -m tests.server.run_soak_server PORT`: the real serve loop around the fake engine
and embedder, with the debug fault routes on, for `warpserve bench soak` in a test."""

from __future__ import annotations

import sys

from tests.server.fakes import FakeEmbedder, FakeEngine
from warpserve.commands.serve import serve
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig

if __name__ == "__main__":
    config = ServerConfig(port=int(sys.argv[1]), drain_timeout_s=5.0, enable_debug_faults=True)
    serve(create_app(FakeEngine(step_s=0.02), FakeEmbedder(), config), config)
