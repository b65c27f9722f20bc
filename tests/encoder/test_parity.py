"""ONNX variants against the PyTorch module they were exported from, on tiny random BERTs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.encoder.conftest import SENTENCES
from warpserve.encoder.models import load_spec
from warpserve.encoder.pipeline import calibration_feeds, calibration_inputs
from warpserve.encoder.recipes import build_variant, get_recipe, session_fusions_to_skip
from warpserve.encoder.session import OrtBackend, OrtSettings, TorchBackend
from warpserve.encoder.tokens import EncoderTokenizer, collate
from warpserve.encoder.validate import output_distribution, row_cosines

# fp32 graphs differ from PyTorch only in summation order (fused attention, layer norm)
FP32_ATOL, FP32_RTOL = 1e-5, 1e-4
# the lean graph also swaps erf GELU for its tanh approximation (|error| < 1e-3 per value)
LEAN_ATOL = 2e-3
# int8 on a random-init model: outputs stay close in direction, not element by element
INT8_MIN_COSINE = 0.98


def _backends(folder, task, variant, cache_root):  # noqa: ANN001, ANN202
    spec = load_spec(str(folder), task)
    tokenizer = EncoderTokenizer(spec.path, spec.max_input_tokens)
    feeds = lambda: calibration_feeds(spec, tokenizer, calibration_inputs(task))  # noqa: E731
    recipe = get_recipe(variant)
    path = build_variant(spec, recipe, feeds, cache_root)
    onnx_backend = OrtBackend(path, variant, OrtSettings(1, session_fusions_to_skip(recipe)))
    return spec, tokenizer, onnx_backend, TorchBackend(spec, num_threads=1)


def _padded_batch(spec, tokenizer, texts) -> dict[str, np.ndarray]:  # noqa: ANN001
    encoded = tokenizer.encode_many(texts)
    assert len({e.num_tokens for e in encoded}) > 1, "the batch must contain padding"
    return collate(encoded, tokenizer.pad_id, spec.input_names)


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "lasttoken"])
@pytest.mark.parametrize(
    ("variant", "atol"),
    [("onnx-fp32", FP32_ATOL), ("onnx-fused-fp32", FP32_ATOL), ("onnx-lean-fp32", LEAN_ATOL)],
)
def test_fp32_onnx_matches_torch_for_each_pooling(
    tiny_models, cache_root, pooling, variant, atol
) -> None:  # noqa: ANN001
    spec, tokenizer, onnx_backend, torch_backend = _backends(
        tiny_models[pooling], "embed", variant, cache_root
    )
    assert spec.pooling.mode == pooling
    batch = _padded_batch(spec, tokenizer, SENTENCES)
    expected = torch_backend.run(batch)
    np.testing.assert_allclose(onnx_backend.run(batch), expected, atol=atol, rtol=FP32_RTOL)


@pytest.mark.parametrize("task", ["classify", "rerank"])
def test_fp32_onnx_matches_torch_for_heads(tiny_models, cache_root, task) -> None:  # noqa: ANN001
    spec, tokenizer, onnx_backend, torch_backend = _backends(
        tiny_models[task], task, "onnx-fused-fp32", cache_root
    )
    texts = SENTENCES if task == "classify" else [(SENTENCES[0], s) for s in SENTENCES]
    batch = _padded_batch(spec, tokenizer, texts)
    assert ("token_type_ids" in batch) == (task != "embed")
    np.testing.assert_allclose(
        onnx_backend.run(batch), torch_backend.run(batch), atol=FP32_ATOL, rtol=FP32_RTOL
    )


@pytest.mark.parametrize(
    "variant",
    [
        "onnx-int8-perchannel",
        "onnx-int8-lean",
        "onnx-int8-lean-smooth",
        "onnx-int8-lean-smooth-selective",
        "onnx-int8-lean-smooth-u8",
    ],
)
def test_int8_variants_stay_close(tiny_models, cache_root, variant) -> None:  # noqa: ANN001
    spec, tokenizer, onnx_backend, torch_backend = _backends(
        tiny_models["mean"], "embed", variant, cache_root
    )
    batch = _padded_batch(spec, tokenizer, SENTENCES)
    expected, actual = torch_backend.run(batch), onnx_backend.run(batch)
    cosines = row_cosines(
        output_distribution(expected, "embed"), output_distribution(actual, "embed")
    )
    assert cosines.min() >= INT8_MIN_COSINE, cosines
