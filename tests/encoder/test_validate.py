"""The accuracy gate: metrics against references, and a damaged variant refused end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from warpserve.encoder import pipeline
from warpserve.encoder.artifacts import report_path
from warpserve.encoder.config import AccuracyBudget
from warpserve.encoder.models import load_spec
from warpserve.encoder.pipeline import OptimizeOptions, optimize
from warpserve.encoder.validate import Accuracy, measure_accuracy, refusal_reasons, spearman


def test_spearman_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 10, 200).astype(float), rng.normal(size=200)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_identical_outputs_pass_and_the_budget_is_applied() -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(40, 8))  # 20 pairs: rows [0, 20) and [20, 40)
    gold = rng.uniform(0, 5, 20)
    same = measure_accuracy(reference, reference.copy(), "embed", gold)
    assert same.mean_cosine == pytest.approx(1.0) and same.spearman_drop == pytest.approx(0.0)
    assert refusal_reasons(same, AccuracyBudget()) == []
    worse = Accuracy(mean_cosine=0.98, min_cosine=0.9, spearman=0.80, reference_spearman=0.82)
    assert len(refusal_reasons(worse, AccuracyBudget())) == 2


def _damaged_copy(source: Path, target: Path) -> Path:
    """Noise as large as the weights themselves on every MatMul weight: a broken quantizer."""
    model = onnx.load(str(source))
    initializers = {i.name: i for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Attention") and node.input[1] in initializers:
            weight = initializers[node.input[1]]
            values = numpy_helper.to_array(weight)
            noisy = values + rng.normal(scale=values.std(), size=values.shape).astype(values.dtype)
            weight.CopyFrom(numpy_helper.from_array(noisy, weight.name))
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


def test_gate_refuses_a_damaged_variant(tiny_models, cache_root, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    spec = load_spec(str(tiny_models["mean"]))
    real_build = pipeline.build_variant

    def build_with_damage(spec, recipe, calibration, root):  # noqa: ANN001, ANN202
        path = real_build(spec, recipe, calibration, root)
        if recipe.name == "onnx-fused-fp32":
            return _damaged_copy(path, tmp_path / "damaged.onnx")
        return path

    monkeypatch.setattr(pipeline, "build_variant", build_with_damage)
    options = OptimizeOptions(
        variants=("onnx-fp32", "onnx-fused-fp32"),
        num_validation_pairs=100,
        num_timing_texts=16,
        num_latency_texts=4,
        timing_rounds=1,
        cache_root=cache_root,
    )
    report = optimize(spec, options)
    verdicts = {v["name"]: v for v in report["variants"]}
    assert verdicts["onnx-fp32"]["passed"]
    assert not verdicts["onnx-fused-fp32"]["passed"]
    assert "mean cosine" in verdicts["onnx-fused-fp32"]["refusal"][0]
    assert report["chosen"] != "onnx-fused-fp32"
    assert report_path(spec, cache_root).exists()
    assert "refused" in report_path(spec, cache_root).with_suffix(".md").read_text()
