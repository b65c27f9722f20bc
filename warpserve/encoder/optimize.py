"""ONNX Runtime transformer fusions: attention, skip-layer-norm, bias-GELU, embed-layer-norm.

The Python optimizer rewrites the exported graph into ORT's fused contrib ops; the C++
graph optimizer does the rest when a session opens (ORT_ENABLE_ALL).
"""

from __future__ import annotations

from pathlib import Path

from warpserve.encoder.models import FUSION_MODEL_TYPES, EncoderSpec


def fuse_graph(
    src: Path,
    dst: Path,
    spec: EncoderSpec,
    *,
    fuse_attention: bool = True,
    approximate_gelu: bool = False,
) -> dict[str, int]:
    """Writes the fused graph to dst; returns how many of each fused op it now has."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    model_type = FUSION_MODEL_TYPES.get(spec.model_type, "bert")
    options = FusionOptions(model_type)
    options.enable_attention = fuse_attention
    # tanh-approximated GELU is cheaper but changes outputs slightly (about 1e-3 absolute)
    options.enable_gelu_approximation = approximate_gelu
    model = optimizer.optimize_model(
        str(src),
        model_type=model_type,
        num_heads=spec.num_heads,
        hidden_size=spec.hidden_size,
        optimization_options=options,
        opt_level=0,  # the Python fusions only; the session applies ORT's own at load time
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    model.save_model_to_file(str(dst))
    return {op: count for op, count in model.get_fused_operator_statistics().items() if count}
