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
from warpserve.encoder.optimize import FusionSettings, disabled_session_fusions
from warpserve.encoder.quantize import QuantSettings

REFERENCE = "torch-fp32"


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    runtime: str = "onnx"  # onnx | torch
    base: str | None = None  # the recipe whose graph this one starts from
    fusion: FusionSettings | None = None  # apply the ORT transformer fusions
    quant: QuantSettings | None = None


_FUSED = FusionSettings()
_LEAN = FusionSettings(skip_layer_norm=False, approximate_gelu=True)
_SMOOTH = 0.8  # SmoothQuant alpha; 0.75-0.85 measured best on MiniLM calibration text


_FUSED_BASE, _LEAN_BASE = "onnx-fused-fp32", "onnx-lean-fp32"
_ALL: tuple[Recipe, ...] = (
    Recipe(REFERENCE, "PyTorch fp32, sdpa attention (the reference)", runtime="torch"),
    Recipe("onnx-fp32", "ONNX export, ORT's built-in graph optimizations"),
    Recipe(_FUSED_BASE, "+ ORT transformer fusions", base="onnx-fp32", fusion=_FUSED),
    Recipe(_LEAN_BASE, "fusions, LayerNorm unfused, tanh GELU", base="onnx-fp32", fusion=_LEAN),
    Recipe(
        "onnx-int8-dynamic",
        "off the shelf: fused + dynamic int8, per-tensor weights",
        base=_FUSED_BASE,
        quant=QuantSettings(per_channel=False),
    ),
    Recipe(
        "onnx-int8-perchannel",
        "fused + dynamic int8, per-channel weights",
        base=_FUSED_BASE,
        quant=QuantSettings(),
    ),
    Recipe(
        "onnx-int8-static",
        "lean + static QDQ int8 (MinMax-calibrated activations), attention fp32",
        base=_LEAN_BASE,
        quant=QuantSettings(mode="static", quantize_attention=False),
    ),
    Recipe(
        "onnx-int8-lean", "lean + dynamic int8 per-channel", base=_LEAN_BASE, quant=QuantSettings()
    ),
    Recipe(
        "onnx-int8-lean-smooth",
        f"lean + SmoothQuant (alpha {_SMOOTH}) + dynamic int8 per-channel",
        base=_LEAN_BASE,
        quant=QuantSettings(smooth_alpha=_SMOOTH),
    ),
    Recipe(
        "onnx-int8-lean-smooth-u8",
        "lean + SmoothQuant + dynamic int8 with uint8 weights (u8u8: no saturation, slower)",
        base=_LEAN_BASE,
        quant=QuantSettings(smooth_alpha=_SMOOTH, weight_type="uint8"),
    ),
    Recipe(
        "onnx-int8-lean-smooth-selective",
        "lean + SmoothQuant + dynamic int8, 3 most error-prone MatMuls fp32",
        base=_LEAN_BASE,
        quant=QuantSettings(smooth_alpha=_SMOOTH, num_excluded=3),
    ),
)


RECIPES: dict[str, Recipe] = {r.name: r for r in _ALL}
# what a service validates (on a slice of STS-B) when no optimize report exists yet:
# the two int8 recipes that led on MiniLM, and the fp32 graph in case both miss the budget
STARTUP_RECIPES = ("onnx-lean-fp32", "onnx-int8-lean", "onnx-int8-lean-smooth")

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


def session_fusions_to_skip(recipe: Recipe) -> tuple[str, ...]:
    """What the ORT session must not fuse for this variant, inherited from its base graph."""
    while recipe.fusion is None and recipe.base is not None:
        recipe = get_recipe(recipe.base)
    return disabled_session_fusions(recipe.fusion)


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
    if recipe.fusion is not None:
        from warpserve.encoder.optimize import fuse_graph

        fused = fuse_graph(base, out, spec, recipe.fusion)
        return {"step": "fuse", "settings": asdict(recipe.fusion), "fused_ops": fused}
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
