"""`huggingface_hub.InferenceClient`, unmodified, against the live server (fakes), plus
the TGI / TEI routes it does not cover."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import ValidationError

from tests.server.conftest import LiveServer, start_server
from tests.server.fakes import FakeEmbedder, FakeEngine


@pytest.fixture(scope="module")
def tgi(server: LiveServer) -> InferenceClient:
    return InferenceClient(model=server.url)


def test_text_generation_matches_openai_completion(
    tgi: InferenceClient, http: httpx.Client
) -> None:
    text = tgi.text_generation("hello", max_new_tokens=6, seed=4, do_sample=True)
    body = {"prompt": "hello", "max_tokens": 6, "seed": 4, "temperature": 1.0}
    assert text == http.post("/v1/completions", json=body).json()["choices"][0]["text"]


def test_text_generation_details(tgi: InferenceClient) -> None:
    out = tgi.text_generation("hello", max_new_tokens=4, details=True, top_n_tokens=2)
    assert out.details.finish_reason == "length"
    assert out.details.generated_tokens == 4
    assert "".join(t.text for t in out.details.tokens) == out.generated_text
    assert all(len(top) == 2 for top in out.details.top_tokens)


def test_streamed_text_equals_non_streamed(tgi: InferenceClient) -> None:
    kwargs = dict(max_new_tokens=12, seed=9, do_sample=True, stop=["q"])
    full = tgi.text_generation("stream me", details=True, **kwargs)
    events = list(tgi.text_generation("stream me", stream=True, details=True, **kwargs))
    assert "".join(e.token.text for e in events) == full.generated_text
    assert events[-1].generated_text == full.generated_text
    assert events[-1].details.finish_reason == full.details.finish_reason


def test_greedy_unless_sampling_is_asked_for(tgi: InferenceClient) -> None:
    a = tgi.text_generation("same", max_new_tokens=8)
    b = tgi.text_generation("same", max_new_tokens=8, seed=123)
    assert a == b


def test_return_full_text_and_eos(tgi: InferenceClient) -> None:
    out = tgi.text_generation("EOS soon", max_new_tokens=20, return_full_text=True, details=True)
    assert out.generated_text.startswith("EOS soon")
    assert out.details.finish_reason == "eos_token"


def test_validation_error_is_typed(tgi: InferenceClient) -> None:
    with pytest.raises(ValidationError):
        tgi.text_generation("hi", max_new_tokens=10_000)


def test_inference_api_route_dispatches_by_task(server: LiveServer) -> None:
    llm = InferenceClient(model=f"{server.url}/models/fake-model")
    assert len(llm.text_generation("hi", max_new_tokens=3)) == 3
    enc = InferenceClient(model=f"{server.url}/models/fake-embed")
    vectors = enc.feature_extraction(["one", "two"])
    assert vectors.shape == (2, 8)
    scores = enc.sentence_similarity("one", other_sentences=["one", "two"])
    assert scores[0] == pytest.approx(1.0, abs=1e-5) and scores[1] < 1.0


def test_embed_route_and_feature_extraction_agree(server: LiveServer, http: httpx.Client) -> None:
    direct = http.post("/embed", json={"inputs": ["one", "two"], "normalize": True}).json()
    via_client = InferenceClient(model=f"{server.url}/models/fake-embed").feature_extraction(
        ["one", "two"], normalize=True
    )
    np.testing.assert_allclose(direct, via_client, rtol=1e-6)
    raw = http.post("/embed", json={"inputs": "one", "normalize": False}).json()
    assert np.linalg.norm(raw[0]) != pytest.approx(1.0)


def test_tokenize_spans_rebuild_the_text(http: httpx.Client) -> None:
    tokens = http.post("/tokenize", json={"inputs": "héllo"}).json()
    assert [t["id"] for t in tokens] == [256, *"héllo".encode()]
    assert tokens[1] == {"id": ord("h"), "text": "h", "start": 0, "stop": 1}
    bare = http.post("/tokenize", json={"inputs": "hi", "add_special_tokens": False}).json()
    assert [t["id"] for t in bare] == list(b"hi")


def test_rerank_and_predict_need_their_model(http: httpx.Client) -> None:
    assert http.post("/rerank", json={"query": "a", "texts": ["a"]}).status_code == 404
    assert http.post("/predict", json={"inputs": "a"}).status_code == 404


def test_rerank_sorts_by_score() -> None:
    live = start_server(FakeEngine(), FakeEmbedder(task="rerank", model_name="fake-rerank"))
    try:
        with live.client() as http:
            body = {"query": "red fox", "texts": ["blue", "red fox", "red"], "return_text": True}
            ranked = http.post("/rerank", json=body).json()
    finally:
        live.stop()
    assert [r["index"] for r in ranked] == [1, 2, 0]
    assert ranked[0]["text"] == "red fox" and 0 < ranked[-1]["score"] < ranked[0]["score"] < 1


def test_predict_and_text_classification() -> None:
    live = start_server(None, FakeEmbedder(task="classify", model_name="fake-cls"))
    try:
        with live.client() as http:
            single = http.post("/predict", json={"inputs": "good day"}).json()
            batch = http.post("/predict", json={"inputs": ["good", "bad"]}).json()
            assert http.post("/generate", json={"inputs": "x"}).status_code == 404
        labels = InferenceClient(model=f"{live.url}/models/fake-cls").text_classification("good")
    finally:
        live.stop()
    assert single[0] == {"label": "POSITIVE", "score": pytest.approx(0.9)}
    assert [b[0]["label"] for b in batch] == ["POSITIVE", "NEGATIVE"]
    assert labels[0].label == "POSITIVE"


def test_long_inputs_are_tokenized_off_the_event_loop(http: httpx.Client) -> None:
    text = "long prompt " * 300  # past the inline threshold: the tokenizer thread
    tokens = http.post("/tokenize", json={"inputs": text, "add_special_tokens": False}).json()
    assert [t["id"] for t in tokens] == list(text.encode())
