"""`warpserve bench soak`: its verdict on made-up measurements (each criterion can fail),
the debug stall route (absent by default, one stalled step when on), and a short run
against the fake-engine server in its own process."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from argparse import Namespace

import pytest
from fastapi.testclient import TestClient

from tests.server.fakes import FakeEmbedder, FakeEngine
from warpserve.bench import soak
from warpserve.bench.soak_load import Result
from warpserve.bench.soak_report import (
    Sample,
    evaluate,
    lag_quantile,
    parse_metrics,
    rss_slope_mb_per_min,
)
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig

METRICS = """# HELP warpserve:num_requests_in_flight x
warpserve:num_requests_in_flight 3.0
warpserve:num_requests_running{model_name="m"} 2.0
warpserve:kv_cache_free_blocks{model_name="m"} 90.0
warpserve:event_loop_lag_seconds 0.004
warpserve:event_loop_lag_distribution_seconds_bucket{le="0.01"} 98.0
warpserve:event_loop_lag_distribution_seconds_bucket{le="0.1"} 100.0
warpserve:event_loop_lag_distribution_seconds_bucket{le="+Inf"} 100.0
"""


def test_metrics_are_parsed_into_a_sample() -> None:
    sample = Sample(1.0)
    parse_metrics(METRICS, sample)
    assert (sample.in_flight, sample.running, sample.free_blocks) == (3.0, 2.0, 90.0)
    assert sample.lag_s == 0.004 and sample.waiting is None
    assert sample.lag_buckets == {"0.01": 98.0, "0.1": 100.0, "+Inf": 100.0}


def test_lag_p99_interpolates_within_the_bucket_of_the_window() -> None:
    first = Sample(0.0, lag_buckets={"0.01": 50.0, "0.1": 50.0, "+Inf": 50.0})
    # in the window: 98 samples <= 10 ms, 2 in (10, 100] ms: p99 half way into that bucket
    last = Sample(9.0, lag_buckets={"0.01": 148.0, "0.1": 150.0, "+Inf": 150.0})
    assert lag_quantile(first, last) == pytest.approx(0.055)
    stalled = Sample(9.0, lag_buckets={"0.01": 60.0, "0.1": 60.0, "+Inf": 150.0})
    assert lag_quantile(first, stalled) == pytest.approx(0.1)  # beyond the last bound


def test_rss_slope_is_least_squares_in_mb_per_minute() -> None:
    samples = [Sample(60.0 * i, rss_mb=100.0 + 2.0 * i + (0.5 if i % 2 else 0.0)) for i in range(9)]
    assert rss_slope_mb_per_min(samples) == pytest.approx(2.0, abs=0.1)
    assert rss_slope_mb_per_min(samples[:2]) is None


def verdict(results: list[Result], final: Sample, health: int = 200) -> dict:
    buckets = {"0.01": 10.0, "+Inf": 10.0}
    baseline = Sample(0.0, 500.0, 10, 20, 0.0, 0.0, 0.0, 64.0, 64.0, 0.0, dict(buckets))
    flat = [Sample(t, rss_mb=500.0, lag_buckets=dict(buckets)) for t in range(10, 120, 10)]
    flat[-1].lag_buckets = {"0.01": 200.0, "+Inf": 200.0}
    return evaluate(results, [baseline, *flat], baseline, final, health, (5.0, 120.0), [0.01])


def test_each_criterion_can_fail() -> None:
    ok = Result("chat", 1.0, 0.5, 200, True)
    settled = Sample(130.0, 500.0, 12, 25, 0.0, 0.0, 0.0, 64.0, 64.0, 0.0)
    passing = verdict([ok], settled)
    assert all(c["passed"] for c in passing.values()), passing
    assert passing["rss_slope_mb_per_min"]["value"] == pytest.approx(0.0)
    failing = verdict([ok, Result("chat", 2.0, 0.1, 500, False, "boom")], settled, health=503)
    assert not failing["documented_statuses"]["passed"]
    assert failing["documented_statuses"]["detail"][0]["status"] == "500"
    assert not failing["health_at_end"]["passed"]
    leaked = Sample(130.0, 500.0, 12, 25, 1.0, 0.0, 0.0, 60.0, 64.0, 0.0)
    assert not verdict([ok], leaked)["counters_back_to_baseline"]["passed"]
    many_threads = Sample(130.0, 500.0, 30, 25, 0.0, 0.0, 0.0, 64.0, 64.0, 0.0)
    assert not verdict([ok], many_threads)["counters_back_to_baseline"]["passed"]


def test_the_stall_route_exists_only_with_debug_faults() -> None:
    plain = TestClient(create_app(FakeEngine(), FakeEmbedder(), ServerConfig()))
    assert plain.post("/debug/stall", params={"seconds": 1}).status_code == 404
    paths = {getattr(r, "path", "") for r in plain.app.routes}
    assert not any(p.startswith("/debug") for p in paths)

    class Stepper:
        def step(self) -> str:
            return "stepped"

    class Engine(FakeEngine):
        """A fake with an engine thread's `engine.step`, as AsyncLLM has."""

        def __init__(self) -> None:
            super().__init__()
            self.engine = Stepper()

    engine = Engine()
    config = ServerConfig(enable_debug_faults=True, api_keys=("k",))
    debug = TestClient(create_app(engine, None, config))
    assert debug.post("/debug/stall", params={"seconds": 0.3}).status_code == 401
    auth = {"Authorization": "Bearer k"}
    assert debug.post("/debug/stall", params={"seconds": 0}, headers=auth).status_code == 400
    answer = debug.post("/debug/stall", params={"seconds": 0.3}, headers=auth)
    assert answer.status_code == 200
    durations = []
    for _ in range(2):  # the engine thread's next step stalls, the one after does not
        started = time.perf_counter()
        worker = threading.Thread(target=engine.engine.step)
        worker.start()
        worker.join()
        durations.append(time.perf_counter() - started)
    assert durations[0] >= 0.3 > durations[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_a_short_soak_against_the_fake_server_passes(tmp_path) -> None:  # noqa: ANN001
    port = free_port()
    output = tmp_path / "soak.json"
    args = Namespace(
        url=f"http://127.0.0.1:{port}",
        serve_cmd=f"{sys.executable} -m tests.server.run_soak_server {port}",
        pid=None,
        api_key=None,
        model=None,
        duration=12.0,
        concurrency=6,
        sample_interval=1.0,
        stall_s=1.0,
        stall_at=0.5,
        quiesce_s=15.0,
        max_tokens=16,
        timeout=30.0,
        startup_timeout=60.0,
        seed=0,
        output=str(output),
        plot=None,
    )
    soak.run(args)
    report = json.loads(output.read_text())
    criteria = report["criteria"]
    for name in ("documented_statuses", "counters_back_to_baseline", "health_at_end"):
        assert criteria[name]["passed"], (name, criteria[name])
    # the fake server's event loop also runs its engine: 100 ms is still far off
    assert criteria["event_loop_lag_p99_s"]["passed"], criteria["event_loop_lag_p99_s"]
    assert "histogram" in criteria["event_loop_lag_p99_s"]["threshold"]
    # 12 s is too short to judge a slope against 1 MB/min, but it is measured
    assert isinstance(criteria["rss_slope_mb_per_min"]["value"], float)
    kinds = set(report["statuses"])
    assert {"chat_stream", "hangup_mid_stream", "slow_reader", "invalid", "embed"} <= kinds
    assert report["statuses"]["batch_mixed"] == {"400": report["statuses"]["batch_mixed"]["400"]}
    assert report["events"][0]["status"] == 501  # the fake has no engine thread to stall
    assert output.with_suffix(".png").stat().st_size > 10_000
    samples = report["samples"]
    assert len(samples) >= 8 and all(s["rss_mb"] for s in samples)
