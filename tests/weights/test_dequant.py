"""Our dequantization against gguf-py's reference (`gguf.quants.dequantize`), bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from tests.weights.conftest import QUANTIZABLE, random_blocks
from warpserve.weights import dequant
from warpserve.weights.dequant import dequantize


@pytest.mark.parametrize("ggml_type", sorted(QUANTIZABLE, key=int), ids=lambda t: t.name)
def test_quantized_real_values_match_reference(ggml_type: T) -> None:
    values = np.random.default_rng(1).standard_normal((16, 128)).astype(np.float32)
    raw = quants.quantize(values, ggml_type)
    ours = dequantize(raw.reshape(-1), ggml_type, values.shape)
    np.testing.assert_array_equal(ours, quants.dequantize(raw, ggml_type))
    # and it is a dequantization: close to what went in
    assert np.abs(ours - values).max() < 0.5


@pytest.mark.parametrize(
    "ggml_type", [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, *sorted(QUANTIZABLE, key=int)], ids=str
)
def test_random_blocks_match_reference(ggml_type: T) -> None:
    # random bits reach every field and bit position of the layout
    raw = random_blocks(ggml_type, 8, 512, np.random.default_rng(2))
    ours = dequantize(raw.reshape(-1), ggml_type, (8, 512))
    np.testing.assert_array_equal(ours, quants.dequantize(raw, ggml_type))


def test_chunked_tensor_matches_unchunked(monkeypatch) -> None:
    raw = random_blocks(T.Q4_K, 8, 1024, np.random.default_rng(3))
    whole = dequantize(raw.reshape(-1), T.Q4_K, (8, 1024))
    monkeypatch.setattr(dequant, "CHUNK_BLOCKS", 5)  # 32 blocks -> 7 uneven chunks
    np.testing.assert_array_equal(dequantize(raw.reshape(-1), T.Q4_K, (8, 1024)), whole)


@pytest.mark.parametrize("ggml_type", [T.F32, T.F16, T.BF16], ids=str)
def test_float_types(ggml_type: T) -> None:
    values = np.random.default_rng(4).standard_normal((4, 6)).astype(np.float32)
    stored = {T.F32: values, T.F16: values.astype(np.float16)}.get(ggml_type)
    if stored is None:
        stored = quants.quantize(values, T.BF16)
    raw = np.ascontiguousarray(stored).view(np.uint8).reshape(-1)
    ours = dequantize(raw, ggml_type, (4, 6))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(
        ours, quants.dequantize(stored.view(np.uint8), ggml_type).reshape(4, 6)
    )
    assert not np.shares_memory(ours, raw)  # never a view of the mapped file


@pytest.mark.parametrize("ggml_type", [T.IQ4_NL, T.TQ1_0, T.Q8_1], ids=str)
def test_unsupported_type_is_refused_by_name(ggml_type: T) -> None:
    with pytest.raises(ValueError, match=rf"'blk\.3\.ffn_up\.weight'.*{ggml_type.name}"):
        dequantize(np.zeros(1024, np.uint8), ggml_type, (1, 256), name="blk.3.ffn_up.weight")
