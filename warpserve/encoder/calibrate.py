"""Calibration: which nodes hold quantizable weights, and what their inputs look like.

A quantizable node is a MatMul whose second input is a constant 2-D weight [K, N], or a
fused Attention whose weight [K, 3K] packs Q, K and V; both read input channels as rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper


@dataclass(frozen=True)
class WeightedNode:
    name: str
    op_type: str  # MatMul | Attention
    input_name: str  # the activation [.., K]
    weight_name: str  # the initializer [K, N]


def weighted_nodes(model: onnx.ModelProto) -> list[WeightedNode]:
    initializers = {init.name: init for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Attention") or len(node.input) < 2:
            continue
        weight = initializers.get(node.input[1])
        if weight is not None and len(weight.dims) == 2:
            found.append(WeightedNode(node.name, node.op_type, node.input[0], node.input[1]))
    return found


def capture_inputs(
    model: onnx.ModelProto, feeds: Iterable[dict[str, np.ndarray]], tensor_names: list[str]
) -> dict[str, list[np.ndarray]]:
    """Runs the fp32 graph with the named intermediate tensors as extra outputs.
    Returns, per name, one [rows, K] array per batch (padding rows included: a dynamic
    per-tensor scale sees them too)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    for name in tensor_names:
        if name not in existing:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    # keep the tensors as named: later fusions could fold them away
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    captured: dict[str, list[np.ndarray]] = {name: [] for name in tensor_names}
    for feed in feeds:
        values = session.run(tensor_names, feed)
        for name, value in zip(tensor_names, values, strict=True):
            captured[name].append(value.reshape(-1, value.shape[-1]))
    return captured


def channel_absmax(batches: list[np.ndarray]) -> np.ndarray:
    """Per input channel max |x| over every row of every batch: [K]."""
    return np.max([np.abs(batch).max(axis=0) for batch in batches], axis=0)


def weight_array(model: onnx.ModelProto, name: str) -> np.ndarray:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    raise KeyError(name)


def replace_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    for index, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(value, name))
            return
    raise KeyError(name)
