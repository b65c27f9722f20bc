"""Bad input is a 400 (OpenAI routes) or 422 (Hugging Face routes) naming the field."""

from __future__ import annotations

import httpx
import pytest

CHAT = "/v1/chat/completions"
CMPL = "/v1/completions"
USER = [{"role": "user", "content": "hi"}]


def chat(**fields: object) -> dict[str, object]:
    return {"messages": USER, **fields}


def cmpl(**fields: object) -> dict[str, object]:
    return {"prompt": "hi", **fields}


OPENAI_CASES = [
    (CHAT, chat(temperature=-0.1), "temperature"),
    (CHAT, chat(temperature="hot"), "temperature"),
    (CHAT, chat(top_p=0), "top_p"),
    (CHAT, chat(top_p=1.01), "top_p"),
    (CHAT, chat(n=0), "n"),
    (CHAT, chat(n=17), "n"),
    (CHAT, chat(n=True), "n"),
    (CHAT, chat(max_tokens=0), "max_tokens"),
    (CHAT, chat(max_tokens=10**6), "max_tokens"),
    (CHAT, chat(max_completion_tokens=10**6), "max_completion_tokens"),
    (CHAT, chat(min_tokens=5, max_tokens=2), "min_tokens"),
    (CHAT, chat(presence_penalty=3), "presence_penalty"),
    (CHAT, chat(frequency_penalty=-2.5), "frequency_penalty"),
    (CHAT, chat(top_logprobs=3), "top_logprobs"),
    (CHAT, chat(logprobs=True, top_logprobs=21), "top_logprobs"),
    (CHAT, chat(logit_bias={"x": 1}), "logit_bias"),
    (CHAT, chat(logit_bias={"5": 101}), "logit_bias.5"),
    (CHAT, chat(stop=[""]), "stop"),
    (CHAT, chat(stop=["a"] * 17), "stop"),
    (CHAT, chat(seed=2**64), "seed"),
    (CHAT, chat(stream_options={"include_usage": True}), "stream_options"),
    (CHAT, chat(model="nope"), "model"),
    (CHAT, chat(tools=[{"type": "function"}]), "tools"),
    (CHAT, chat(response_format={"type": "json_object"}), "response_format"),
    (CHAT, {"messages": []}, "messages"),
    (CHAT, {"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
    (CHAT, {"messages": "hi"}, "messages"),
    (CHAT, {}, "messages"),
    (CMPL, {}, "prompt"),
    (CMPL, cmpl(prompt=""), "prompt"),
    (CMPL, cmpl(prompt=[]), "prompt"),
    (CMPL, cmpl(prompt=[1, -1]), "prompt"),
    (CMPL, cmpl(prompt=[1, 999]), "prompt"),
    (CMPL, cmpl(prompt="x" * 300), "prompt"),
    (CMPL, cmpl(max_tokens=300), "max_tokens"),
    (CMPL, cmpl(logprobs=21), "logprobs"),
    (CMPL, cmpl(best_of=3), "best_of"),
    (CMPL, cmpl(suffix="x"), "suffix"),
    (CMPL, cmpl(echo=True, logprobs=1), "echo"),
    ("/v1/embeddings", {"input": []}, "input"),
    ("/v1/embeddings", {"input": ""}, "input"),
    ("/v1/embeddings", {"input": "x", "model": "fake-model"}, "model"),
    ("/v1/embeddings", {"input": "x", "dimensions": 3}, "dimensions"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format"),
]


@pytest.mark.parametrize(("path", "body", "param"), OPENAI_CASES)
def test_openai_routes_answer_400_naming_the_field(
    http: httpx.Client, path: str, body: dict, param: str
) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param or error["param"].startswith(param), error
    assert error["type"] == "invalid_request_error" and error["message"]


GEN = "/generate"
HF_CASES = [
    (GEN, {"inputs": "hi", "parameters": {"temperature": 0}}, "parameters.temperature"),
    (GEN, {"inputs": "hi", "parameters": {"top_p": 1.5}}, "parameters.top_p"),
    (GEN, {"inputs": "hi", "parameters": {"top_k": 0}}, "parameters.top_k"),
    (GEN, {"inputs": "hi", "parameters": {"max_new_tokens": 0}}, "parameters.max_new_tokens"),
    (
        GEN,
        {"inputs": "hi", "parameters": {"repetition_penalty": 0}},
        "parameters.repetition_penalty",
    ),
    (GEN, {"inputs": "hi", "parameters": {"typical_p": 0.5}}, "parameters.typical_p"),
    (GEN, {"inputs": "hi", "parameters": {"seed": -1}}, "parameters.seed"),
    (GEN, {"inputs": ""}, "inputs"),
    (GEN, {"inputs": 3}, "inputs"),
    ("/generate_stream", {"inputs": "hi", "parameters": {"best_of": 2}}, "parameters.best_of"),
    ("/embed", {"inputs": []}, "inputs"),
    ("/embed", {"inputs": "x", "truncation_direction": "left"}, "truncation_direction"),
    ("/models/fake-model", {"inputs": "hi", "parameters": {"top_p": 0}}, "parameters.top_p"),
    ("/models/fake-embed", {"inputs": 5}, "inputs"),
    ("/tokenize", {"inputs": ""}, "inputs"),
]


@pytest.mark.parametrize(("path", "body", "param"), HF_CASES)
def test_hf_routes_answer_in_tgi_shape(
    http: httpx.Client, path: str, body: dict, param: str
) -> None:
    response = http.post(path, json=body)
    assert response.status_code in (400, 422), response.text
    payload = response.json()
    assert payload["error_type"] == "validation"
    assert param in payload["error"]


def test_generate_max_new_tokens_beyond_context(http: httpx.Client) -> None:
    response = http.post(GEN, json={"inputs": "hi", "parameters": {"max_new_tokens": 10_000}})
    assert response.status_code == 400
    assert response.json()["error"].startswith("max_new_tokens")


@pytest.mark.parametrize(
    "content", [b"{", b"[]", b"null", b'{"messages": [}', b"\xff\xfe", b'"x"', b"1e999"]
)
def test_malformed_bodies_are_400_not_500(http: httpx.Client, content: bytes) -> None:
    response = http.post(CHAT, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_nan_is_rejected(http: httpx.Client) -> None:
    response = http.post(
        CHAT,
        content=b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "temperature"


def test_unknown_route_and_method_use_the_error_shape(http: httpx.Client) -> None:
    missing = http.get("/v1/nothing")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong_method = http.get(CHAT)
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["message"]
    assert http.get("/v1/models/nope").status_code == 404


def test_unknown_fields_are_ignored(http: httpx.Client) -> None:
    response = http.post(CHAT, json=chat(max_tokens=2, not_a_field=1, user="u"))
    assert response.status_code == 200


LONG = "word " * 300  # over the fake embedder's 256-word limit


@pytest.mark.parametrize(
    ("path", "body", "name"),
    [
        ("/embed", {"inputs": LONG}, "inputs"),
        ("/embed", {"inputs": ["short", LONG]}, "inputs[1]"),
        ("/models/fake-embed", {"inputs": ["short", LONG]}, "inputs[1]"),
        ("/models/fake-embed", {"inputs": LONG, "parameters": {"truncate": False}}, "inputs"),
    ],
)
def test_too_long_embedding_input_on_hf_routes_is_413_naming_the_limit(
    http: httpx.Client, path: str, body: dict, name: str
) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 413, response.text
    payload = response.json()
    assert payload["error_type"] == "validation"
    assert payload["error"] == (
        f"{name} has 300 tokens, more than the model's limit of 256; "
        "pass truncate=true to cut it to the limit"
    )
    where = "parameters" in body  # the Inference API reads options there or at the top
    fixed = {**body, "parameters": {"truncate": True}} if where else {**body, "truncate": True}
    assert http.post(path, json=fixed).status_code == 200


def test_too_long_embedding_input_on_openai_is_400_naming_the_limit(http: httpx.Client) -> None:
    response = http.post("/v1/embeddings", json={"input": ["short", LONG]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["message"] == (
        "input[1] has 300 tokens, more than the model's limit of 256; shorten it"
    )
    assert (error["param"], error["code"]) == ("input", "context_length_exceeded")
    single = http.post("/v1/embeddings", json={"input": LONG}).json()["error"]
    assert single["message"].startswith("input has 300 tokens")
