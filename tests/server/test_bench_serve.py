"""`warpserve bench serve` against the live server around the fake engine."""

from __future__ import annotations

import json
from pathlib import Path

from tests.server.conftest import start_server
from tests.server.fakes import FakeEngine
from warpserve.cli import main


def _bench(url: str, out: Path, *extra: str) -> int:
    argv = ["bench", "serve", "--url", url, "--num-requests", "6", "--warmup", "1"]
    argv += ["--input-len", "4:12", "--output-len", "5:10", "--output", str(out), *extra]
    return main(argv)


def test_concurrency_levels_write_json_and_a_plot(tmp_path: Path) -> None:
    live = start_server(FakeEngine(max_model_len=512, step_s=0.005))
    try:
        assert _bench(live.url, tmp_path / "c.json", "--concurrency", "1,3") == 0
        assert _bench(live.url, tmp_path / "r.json", "--rate", "50", "--endpoint", "chat") == 0
    finally:
        live.stop()
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["mode"] == "concurrency" and report["target"]["model"] == "fake-model"
    assert [level["concurrency"] for level in report["levels"]] == [1, 3]
    for level in report["levels"]:
        assert level["num_ok"] == 6 and level["errors"] == {}
        assert 30 <= level["output_tokens"] <= 60  # usage from the server, 5..10 each
        assert 0 < level["ttft_s"]["p50"] <= level["ttft_s"]["p99"] <= level["e2e_s"]["p99"]
        assert level["itl_s"]["p50"] > 0
    assert "versions" in report["environment"]
    assert (tmp_path / "c.png").stat().st_size > 10_000
    rate = json.loads((tmp_path / "r.json").read_text())
    assert rate["levels"][0]["rate"] == 50 and rate["levels"][0]["num_ok"] == 6


def test_errors_are_counted_by_kind(tmp_path: Path) -> None:
    live = start_server(FakeEngine(max_running=1, max_waiting=1, step_s=0.02, max_model_len=512))
    try:
        status = _bench(live.url, tmp_path / "o.json", "--concurrency", "6")
    finally:
        live.stop()
    level = json.loads((tmp_path / "o.json").read_text())["levels"][0]
    assert level["errors"].get("http_429", 0) >= 1
    assert level["num_ok"] + level["errors"]["http_429"] == 6
    assert status == 0  # some succeeded


def test_logit_bias_reaches_the_server(tmp_path: Path) -> None:
    engine = FakeEngine(max_model_len=512, step_s=0.001)
    live = start_server(engine)
    try:
        argv = ["--concurrency", "2", "--logit-bias", "7:-100,9:2.5", "--no-ignore-eos"]
        assert _bench(live.url, tmp_path / "b.json", *argv) == 0
    finally:
        live.stop()
    biases = [dict(params.logit_bias) for _, _, params in engine.submitted]
    assert biases and all(b == {7: -100.0, 9: 2.5} for b in biases), biases
    assert not any(params.ignore_eos for _, _, params in engine.submitted)
