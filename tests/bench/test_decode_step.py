"""`warpserve bench decode-step` on the tiny Llama: rows per format and batch size, the
speedup computed from the measured times, and fused logits matching eager ones."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from warpserve.bench import decode_step


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_decode_step_bench_on_tiny_model(tiny_llama_dir, tmp_path) -> None:
    parser = argparse.ArgumentParser()
    decode_step.add_arguments(parser)
    out = tmp_path / "step.json"
    args = parser.parse_args(
        ["--model", str(tiny_llama_dir), "--quantizations", "none,int8", "--batch-sizes", "1,5",
         "--context", "20", "--repeats", "2", "--out", str(out)]
    )  # fmt: skip
    assert decode_step.run(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["quantization"], r["batch_size"]) for r in rows] == [
        ("none", 1), ("none", 5), ("int8", 1), ("int8", 5)
    ]  # fmt: skip
    for row in rows:
        assert row["speedup"] == pytest.approx(row["eager_ms"] / row["fused_ms"])
        assert row["fused_tokens_per_s"] == pytest.approx(row["batch_size"] / row["fused_ms"] * 1e3)
    fp32 = [r for r in rows if r["quantization"] == "none"]
    assert all(r["max_abs_logit_diff"] < 1e-3 for r in fp32)
