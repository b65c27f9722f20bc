"""`warpserve bench spec` end to end on the tiny model: every method runs, greedy outputs
are identical to plain decoding, and the JSON holds the per-proposer counters."""

import argparse
import json
from pathlib import Path

from warpserve.bench import spec


def test_bench_spec_runs_and_reports(tiny_llama_dir, tmp_path) -> None:
    parser = argparse.ArgumentParser()
    spec.add_arguments(parser)
    out = tmp_path / "spec.json"
    args = parser.parse_args(
        [
            f"--model={tiny_llama_dir}",
            "--max-tokens=6",
            "--num-grounded=2",
            "--num-chat=1",
            "--concurrency=2",
            "--draft-quantization=none",
            "--layer-skip-depth=1",
            "--kv-cache-gib=0.01",
            "--max-passage-chars=120",
            "--repeats=2",
            f"--out={out}",
        ]
    )
    assert spec.run(args) == 0
    workloads = json.loads(Path(out).read_text())["workloads"]
    assert set(workloads) == {"grounded_single", "chat_single", "grounded_x2", "chat_x2"}
    for by_method in workloads.values():
        assert set(by_method) == set(spec.METHODS)
        assert all(r["identical_to_none"] for r in by_method.values())
    assert workloads["grounded_x2"]["draft"]["num_draft_tokens"] > 0
