"""`python -m tests.server.run_fake_server PORT`: the real serve loop around a fake engine,
in its own process, so a test can send it SIGTERM."""

from __future__ import annotations

import sys

from tests.server.fakes import FakeEngine
from warpserve.commands.serve import serve
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig

if __name__ == "__main__":
    config = ServerConfig(port=int(sys.argv[1]), drain_timeout_s=10.0)
    serve(create_app(FakeEngine(step_s=0.03), None, config), config)
