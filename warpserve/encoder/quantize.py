"""int8 quantization of a fused encoder graph with ONNX Runtime's quantizer.

Dynamic: weights int8 per output channel, activations uint8 with one scale per tensor
computed at run time (MLAS u8s8 kernels). Static: QDQ with activation scales from
calibration text. Options on top: SmoothQuant (smooth.py) and keeping the most
error-prone weighted nodes in fp32, found by a per-node sweep on calibration text.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from warpserve.encoder.calibrate import (
    WeightedNode,
    capture_inputs,
    channel_absmax,
    weight_array,
    weighted_nodes,
)
from warpserve.encoder.smooth import smooth_model


@dataclass(frozen=True)
class QuantSettings:
    mode: str = "dynamic"  # dynamic | static
    per_channel: bool = True  # one weight scale per output channel instead of per tensor
    # 7-bit weights: only needed where u8s8 products can saturate int16 (pre-VNNI kernels);
    # measured on this model it buys no accuracy here, so it is off by default
    reduce_range: bool = False
    weight_type: str = "int8"  # int8 (u8s8 kernels) | uint8 (u8u8, slower, no saturation)
    quantize_attention: bool = True  # the fused Q/K/V projection (Attention -> QAttention)
    smooth_alpha: float | None = None  # SmoothQuant migration strength; None: off
    num_excluded: int = 0  # the most error-prone weighted nodes stay fp32

    def __post_init__(self) -> None:
        if self.mode not in ("dynamic", "static"):
            raise ValueError("quantization mode must be 'dynamic' or 'static'")
        if self.weight_type not in ("int8", "uint8"):
            raise ValueError("weight_type must be 'int8' or 'uint8'")
        if self.smooth_alpha is not None and not 0.0 < self.smooth_alpha < 1.0:
            raise ValueError("smooth_alpha must be in (0, 1), e.g. 0.8")
        if self.num_excluded < 0:
            raise ValueError("num_excluded must be >= 0")


@dataclass(frozen=True)
class QuantSummary:
    num_quantized: int
    num_smoothed: int
    excluded: tuple[str, ...]  # node names kept fp32, most error-prone first


def quantize_graph(
    src: Path, dst: Path, settings: QuantSettings, calibration: list[dict[str, np.ndarray]]
) -> QuantSummary:
    model = onnx.load(str(src))
    nodes = [
        n for n in weighted_nodes(model) if settings.quantize_attention or n.op_type != "Attention"
    ]
    needs_stats = settings.smooth_alpha is not None or settings.num_excluded > 0
    captured = (
        capture_inputs(model, calibration, sorted({n.input_name for n in nodes}))
        if needs_stats
        else {}
    )
    num_smoothed = 0
    if settings.smooth_alpha is not None:
        absmax = {name: channel_absmax(batches) for name, batches in captured.items()}
        model = smooth_model(model, nodes, absmax, settings.smooth_alpha)
        captured = {name: _divide_by_scale(model, name, b) for name, b in captured.items()}
        num_smoothed = len(captured)
    ranked = rank_by_error(model, nodes, captured) if settings.num_excluded else []
    excluded = tuple(ranked[: settings.num_excluded])
    if settings.mode == "static":
        model = _with_inferred_types(model)
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / "staged.onnx"
        onnx.save(model, str(staged))
        _run_quantizer(
            staged, dst, settings, [n.name for n in nodes if n.name not in excluded], calibration
        )
    return QuantSummary(len(nodes) - len(excluded), num_smoothed, excluded)


def _with_inferred_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """Static calibration only records tensors of known type; ONNX's own shape inference
    stops at ORT's fused contrib ops, ORT's symbolic one knows them."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    return SymbolicShapeInference.infer_shapes(model, auto_merge=True)


def _divide_by_scale(
    model: onnx.ModelProto, input_name: str, batches: list[np.ndarray]
) -> list[np.ndarray]:
    inverse = weight_array(model, input_name + "_smooth_inverse")
    return [batch * inverse for batch in batches]


def rank_by_error(
    model: onnx.ModelProto, nodes: list[WeightedNode], captured: dict[str, list[np.ndarray]]
) -> list[str]:
    """Node names, largest simulated int8 output error first (the per-node sweep)."""
    errors = {}
    for node in nodes:
        weight = weight_array(model, node.weight_name)
        batches = captured[node.input_name]  # already divided by s when smoothed
        errors[node.name] = float(np.mean([simulated_error(x, weight) for x in batches]))
    return sorted(errors, key=errors.__getitem__, reverse=True)


def simulated_error(x: np.ndarray, weight: np.ndarray) -> float:
    """||Q(x) Q(W) - x W|| / ||x W|| with x [M, K] uint8 per tensor, W [K, N] int8 per column."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    x_scale = max(high - low, 1e-12) / 255.0
    zero = np.round(-low / x_scale)
    x_q = (np.clip(np.round(x / x_scale) + zero, 0, 255) - zero) * x_scale
    w_scale = np.maximum(np.abs(weight).max(axis=0, keepdims=True), 1e-12) / 127.0
    w_q = np.round(weight / w_scale) * w_scale
    exact = x @ weight
    return float(np.linalg.norm(x_q @ w_q - exact) / max(float(np.linalg.norm(exact)), 1e-12))


def _run_quantizer(
    src: Path,
    dst: Path,
    settings: QuantSettings,
    node_names: list[str],
    calibration: list[dict[str, np.ndarray]],
) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    weight_type = QuantType.QInt8 if settings.weight_type == "int8" else QuantType.QUInt8
    # the fused contrib ops defeat shape inference; their outputs are float32
    extra = {"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT}
    common = {
        "per_channel": settings.per_channel,
        "reduce_range": settings.reduce_range,
        "weight_type": weight_type,
        "nodes_to_quantize": node_names,
        "extra_options": extra,
    }
    with _quiet_root_logger():
        if settings.mode == "dynamic":
            ops = ["MatMul", "Attention"] if settings.quantize_attention else ["MatMul"]
            quantize_dynamic(src, dst, op_types_to_quantize=ops, **common)
            return
        quantize_static(
            src,
            dst,
            _FeedReader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],  # ORT has no QDQ form of the fused Attention
            activation_type=QuantType.QUInt8,
            **common,
        )


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ORT's quantizer logs a line per tensor to the root logger at INFO."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


class _FeedReader:
    """onnxruntime.quantization.CalibrationDataReader over prepared batches."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)
