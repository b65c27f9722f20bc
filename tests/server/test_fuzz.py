"""A bounded schemathesis run against the server's own OpenAPI document: no input, valid
or not, may produce a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from tests.server.conftest import LiveServer  # noqa: E402
from tests.server.fakes import FakeEmbedder, FakeEngine  # noqa: E402
from warpserve.server.app import create_app  # noqa: E402

# The document of an app like the one under test (routes do not depend on the engine).
schema = schemathesis.openapi.from_dict(create_app(FakeEngine(), FakeEmbedder()).openapi())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], deterministic=True
)
MAX_EXAMPLES = 15  # per operation: bounded for CI on two shared cores


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    """No step delay and a short context: generated requests finish in milliseconds."""
    return FakeEngine(step_s=0.0, max_model_len=48, max_waiting=64)


def bounded(max_examples: int) -> settings:
    """Hypothesis settings for a fuzz run: max_examples per operation, reproducible."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )


def assert_no_server_error(case, server: LiveServer, timeout_s: float) -> None:  # noqa: ANN001
    response = case.call(base_url=server.url, timeout=timeout_s)
    assert response.status_code < 500, (case.as_curl_command(), response.text)


@schema.parametrize()
@bounded(MAX_EXAMPLES)
def test_no_input_produces_a_server_error(case, server: LiveServer) -> None:  # noqa: ANN001
    assert_no_server_error(case, server, timeout_s=10)
