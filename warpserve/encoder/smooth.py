"""SmoothQuant for ONNX graphs: move activation outliers into the weights before int8.

A dynamic int8 MatMul takes one scale for the whole activation tensor, so a few outlier
channels (BERT's LayerNorm outputs have them) crush the resolution of every other channel.
For each activation X [.., K] feeding weights W [K, N]:

    X W = (X / s) (diag(s) W),    s_j = max|X_j|^alpha / max|W_j,:|^(1 - alpha)

X / s is an inserted Mul (the LayerNorm output also feeds the residual, so s cannot be
folded into gamma); diag(s) W is folded into the weight, which per-channel int8 absorbs.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

from warpserve.encoder.calibrate import WeightedNode, replace_initializer, weight_array

_SCALE_LIMITS = (1.0, 1e4)  # s >= 1 (see smoothing_scale); the cap keeps W finite


def smoothing_scale(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float) -> np.ndarray:
    """s [K] from per-channel max |X| and max |W| (rows of W are input channels).

    One-sided: s >= 1, so a channel is only ever divided down, never amplified. A channel
    that was quiet on calibration text and is loud on real text would otherwise become the
    new outlier (on STS-B: min cosine 0.963 two-sided, 0.974 one-sided, alpha 0.8)."""
    act = np.maximum(act_absmax.astype(np.float64), 1e-8)
    weight = np.maximum(weight_absmax.astype(np.float64), 1e-8)
    scale = act**alpha / weight ** (1.0 - alpha)
    return np.clip(scale, 1.0, _SCALE_LIMITS[1]).astype(np.float32)


def smooth_model(
    model: onnx.ModelProto,
    nodes: list[WeightedNode],
    act_absmax: dict[str, np.ndarray],
    alpha: float,
) -> onnx.ModelProto:
    """A smoothed copy; nodes sharing an activation share one scale and one Mul."""
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    groups: dict[str, list[WeightedNode]] = defaultdict(list)
    for node in nodes:
        groups[node.input_name].append(node)
    mul_before: dict[str, onnx.NodeProto] = {}  # first consumer's name -> the inserted Mul
    for input_name, members in groups.items():
        scale = _fold_into_weights(smoothed, members, act_absmax[input_name], alpha)
        mul_before[members[0].name] = _divide_node(smoothed, input_name, scale)
        _rewire(smoothed, {m.name for m in members}, input_name, input_name + "_smoothed")
    _insert_before(smoothed, mul_before)
    return smoothed


def _fold_into_weights(
    model: onnx.ModelProto, members: list[WeightedNode], act_absmax: np.ndarray, alpha: float
) -> np.ndarray:
    weights = [weight_array(model, m.weight_name) for m in members]
    weight_absmax = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)  # [K]
    scale = smoothing_scale(act_absmax, weight_absmax, alpha)
    for member, weight in zip(members, weights, strict=True):
        replace_initializer(model, member.weight_name, (weight * scale[:, None]).astype(np.float32))
    return scale


def _divide_node(model: onnx.ModelProto, input_name: str, scale: np.ndarray) -> onnx.NodeProto:
    inverse_name = input_name + "_smooth_inverse"
    inverse = (1.0 / scale).astype(np.float32)
    model.graph.initializer.append(numpy_helper.from_array(inverse, inverse_name))
    return helper.make_node(
        "Mul", [input_name, inverse_name], [input_name + "_smoothed"], name=input_name + "_smooth"
    )


def _rewire(model: onnx.ModelProto, node_names: set[str], old: str, new: str) -> None:
    for node in model.graph.node:
        if node.name in node_names and node.input[0] == old:
            node.input[0] = new


def _insert_before(model: onnx.ModelProto, mul_before: dict[str, onnx.NodeProto]) -> None:
    """Keeps the node list topologically sorted: each Mul goes right before its consumer."""
    ordered = []
    for node in model.graph.node:
        if node.name in mul_before:
            ordered.append(mul_before[node.name])
        ordered.append(node)
    del model.graph.node[:]
    model.graph.node.extend(ordered)
