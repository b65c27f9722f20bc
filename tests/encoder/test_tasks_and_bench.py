"""The optimize pipeline on classifier and cross-encoder heads, and `bench embed` end to
end on a tiny model (a smoke test of the command, not a measurement)."""

from __future__ import annotations

import argparse
import json

import pytest

from warpserve.encoder.models import load_spec
from warpserve.encoder.pipeline import OptimizeOptions, optimize


def _quick(cache_root, variants: tuple[str, ...]) -> OptimizeOptions:  # noqa: ANN001
    return OptimizeOptions(
        variants=variants,
        num_validation_pairs=60,
        num_timing_texts=16,
        num_latency_texts=4,
        timing_rounds=1,
        cache_root=cache_root,
    )


@pytest.mark.parametrize(("task", "has_spearman"), [("rerank", True), ("classify", False)])
def test_heads_are_validated_like_embeddings(tiny_models, cache_root, task, has_spearman) -> None:  # noqa: ANN001
    spec = load_spec(str(tiny_models[task]), task)
    report = optimize(spec, _quick(cache_root, ("onnx-fused-fp32", "onnx-int8-lean")))
    fused = next(v for v in report["variants"] if v["name"] == "onnx-fused-fp32")
    assert fused["passed"] and fused["accuracy"]["mean_cosine"] > 0.9999
    assert (fused["accuracy"]["spearman"] is not None) == has_spearman
    assert report["chosen"] in {v["name"] for v in report["variants"] if v["passed"]}


def test_bench_embed_runs_and_writes_json(tiny_models, cache_root, tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("sentence_transformers")
    from warpserve.bench import embed

    parser = argparse.ArgumentParser()
    embed.add_arguments(parser)
    out = tmp_path / "embed.json"
    args = parser.parse_args(
        ["--model", str(tiny_models["mean"]), "--variant", "onnx-fused-fp32"]
        + ["--num-texts", "24", "--num-long-texts", "4", "--long-tokens", "40"]
        + ["--num-latency-texts", "3", "--rounds", "1", "--chunk", "8", "--threads", "1"]
        + ["--num-sts-pairs", "20", "--cache-dir", str(cache_root), "--out", str(out)]
    )
    assert embed.run(args) == 0
    payload = json.loads(out.read_text())
    ours = payload["results"]["warpserve onnx-fused-fp32"]
    assert ours["throughput_short"] > 0 and ours["throughput_long"] > 0
    agreement = payload["agreement_with_sentence_transformers"]["warpserve onnx-fused-fp32"]
    assert agreement["min_cosine"] > 0.9999  # fp32 graph: the same embeddings as ST
    assert agreement["num_texts"] == 40
    reference = payload["results"]["sentence-transformers fp32"]["sts_spearman"]
    assert ours["sts_spearman"] == pytest.approx(reference, abs=1e-3)
