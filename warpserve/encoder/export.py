"""PyTorch -> ONNX with dynamic batch and sequence axes, pooling or the head included."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from warpserve.encoder.models import EncoderSpec, load_torch_encoder

OPSET = 17


def export_onnx(spec: EncoderSpec, path: Path) -> Path:
    """Writes one self-contained .onnx file (weights inline; these models are < 2 GB)."""
    # eager attention traces to the MatMul/Softmax pattern the ORT attention fusion matches
    module = load_torch_encoder(spec, attn_implementation="eager")
    names = list(spec.input_names)
    example = _example_inputs(names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes["output"] = {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # the TorchScript exporter's deprecation and tracer notes are expected here
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=names,
            output_names=["output"],
            dynamic_axes=axes,
            opset_version=OPSET,
            # the legacy exporter: the dynamo one emits graphs the ORT fusions do not match
            dynamo=False,
        )
    return path


def _example_inputs(names: list[str]) -> tuple[torch.Tensor, ...]:
    """A padded row in the example keeps the tracer from specializing on an all-ones mask."""
    arrays = {
        "input_ids": torch.full((2, 8), 5, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 8, [1] * 5 + [0] * 3]),
        "token_type_ids": torch.zeros(2, 8, dtype=torch.long),
    }
    return tuple(arrays[name] for name in names)
