"""Named variants and how each is built: export -> fuse -> quantize, each step cached.

A recipe names its base recipe and the one step it adds, so `onnx-int8-smooth` reuses the
fused graph that `onnx-fused-fp32` already wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from warpserve.encoder.artifacts import variant_path
from warpserve.encoder.models import EncoderSpec
from warpserve.encoder.quantize import QuantSettings

REFERENCE = "torch-fp32"


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    runtime: str = "onnx"  # onnx | torch
    base: str | None = None  # the recipe whose graph this one starts from
    fuse: bool = False  # apply the ORT transformer fusions
    approximate_gelu: bool = False  # with fuse: tanh GELU (FastGelu) instead of erf
    quant: QuantSettings | None = None


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(REFERENCE, "PyTorch fp32, sdpa attention (the reference)", runtime="torch"),
        Recipe("onnx-fp32", "ONNX export, ORT's built-in graph optimizations"),
        Recipe("onnx-fused-fp32", "+ transformer fusions", base="onnx-fp32", fuse=True),
        Recipe(
            "onnx-int8-dynamic",
            "off the shelf: dynamic int8, per-tensor weights",
            base="onnx-fused-fp32",
            quant=QuantSettings(per_channel=False),
        ),
        Recipe(
            "onnx-int8-perchannel",
            "dynamic int8, per-channel weights",
            base="onnx-fused-fp32",
            quant=QuantSettings(),
        ),
        Recipe(
            "onnx-int8-static",
            "static QDQ int8 (calibrated activations), attention fp32",
            base="onnx-fused-fp32",
            quant=QuantSettings(mode="static", quantize_attention=False),
        ),
        Recipe(
            "onnx-int8-smooth",
            "SmoothQuant (alpha 0.8) + dynamic int8 per-channel",
            base="onnx-fused-fp32",
            quant=QuantSettings(smooth_alpha=0.8),
        ),
        Recipe(
            "onnx-int8-smooth-selective",
            "SmoothQuant + dynamic int8, 3 most error-prone MatMuls fp32",
            base="onnx-fused-fp32",
            quant=QuantSettings(smooth_alpha=0.8, num_excluded=3),
        ),
    )
}
DEFAULT_RECIPE = "onnx-int8-smooth"  # what the service builds when no report exists yet

CalibrationFeeds = Callable[[], list[dict[str, np.ndarray]]]


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown variant '{name}'; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def build_variant(
    spec: EncoderSpec, recipe: Recipe, calibration: CalibrationFeeds, root: Path | None = None
) -> Path | None:
    """The variant's .onnx file, built (with its bases) unless cached; None for torch."""
    if recipe.runtime == "torch":
        return None
    target = variant_path(spec, recipe.name, root)
    if target.exists():
        return target
    base = (
        None
        if recipe.base is None
        else build_variant(spec, get_recipe(recipe.base), calibration, root)
    )
    with tempfile.TemporaryDirectory(dir=_ensure(target.parent.parent)) as scratch:
        staged = Path(scratch) / "model.onnx"
        details = _run_step(spec, recipe, base, staged, calibration)
        (Path(scratch) / "build.json").write_text(json.dumps(details, indent=2))
        _publish(Path(scratch), target.parent)
    return target


def build_details(spec: EncoderSpec, name: str, root: Path | None = None) -> dict:
    path = variant_path(spec, name, root).parent / "build.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _run_step(
    spec: EncoderSpec, recipe: Recipe, base: Path | None, out: Path, calibration: CalibrationFeeds
) -> dict:
    if base is None:
        from warpserve.encoder.export import export_onnx

        export_onnx(spec, out)
        return {"step": "export"}
    if recipe.fuse:
        from warpserve.encoder.optimize import fuse_graph

        fused = fuse_graph(base, out, spec, approximate_gelu=recipe.approximate_gelu)
        return {"step": "fuse", "fused_ops": fused}
    assert recipe.quant is not None, f"recipe {recipe.name} adds no step"
    from warpserve.encoder.quantize import quantize_graph

    summary = quantize_graph(base, out, recipe.quant, calibration())
    return {"step": "quantize", "settings": asdict(recipe.quant), **asdict(summary)}


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _publish(staged: Path, final: Path) -> None:
    """Atomic from a reader's view: the folder appears whole or not at all."""
    ready = staged.with_name(staged.name + "-ready")
    shutil.copytree(staged, ready)
    try:
        os.replace(ready, final)
    except OSError:  # another process published first: theirs is as good as ours
        shutil.rmtree(ready, ignore_errors=True)
