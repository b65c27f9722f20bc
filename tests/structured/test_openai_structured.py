"""Structured output over HTTP on SmolLM2-135M with the official clients: what a constraint
asks for is what comes back, streamed == non-streamed, unconstrained neighbours unchanged,
and anything that cannot be enforced is a 400."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from huggingface_hub import InferenceClient
from pydantic import BaseModel, Field

from tests.server.conftest import LiveServer
from tests.structured.conftest import MODEL

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class Color(StrEnum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class City(BaseModel):
    name: str = Field(max_length=24)
    population: int = Field(ge=0, le=50_000_000)


class Country(BaseModel):  # nested objects, an array of objects
    name: str = Field(max_length=24)
    capital: City
    cities: list[City] = Field(max_length=2)


class Palette(BaseModel):  # enums, an array of enums, a bounded number
    favourite: Color
    others: list[Color] = Field(max_length=3)
    saturation: int = Field(ge=0, le=100)


class Profile(BaseModel):  # optional fields (strict mode: required but nullable)
    username: str = Field(max_length=16)
    age: int | None = Field(ge=0, le=120)
    bio: str | None = Field(max_length=30)
    is_admin: bool


@pytest.mark.parametrize(
    ("model", "prompt"),
    [
        (Country, "Describe France with its capital and two cities as JSON."),
        (Palette, "Pick a favourite color and a saturation."),
        (Profile, "Make a user profile for Alice, aged 30."),
    ],
)
def test_parse_returns_objects_that_validate(client: openai.OpenAI, model, prompt) -> None:  # noqa: ANN001
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": prompt}],
        response_format=model,
        temperature=0,
        max_tokens=200,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(choice.message.parsed, model)
    model.model_validate_json(choice.message.content)


def test_json_object_parses_and_stream_equals_non_stream(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Give me a JSON object about a cat."}],
        "response_format": {"type": "json_object"},
        "temperature": 0,
        "max_tokens": 48,
    }
    whole = client.chat.completions.create(**kwargs).choices[0]
    pieces, reason = [], None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            reason = choice.finish_reason or reason
    assert "".join(pieces) == whole.message.content
    assert reason == whole.finish_reason
    if whole.finish_reason == "stop":
        assert isinstance(json.loads(whole.message.content), dict)
    else:  # max_tokens first: said so, and the text is what was generated (a JSON prefix)
        assert whole.finish_reason == "length" and whole.message.content.startswith("{")


def test_length_before_the_grammar_completes_says_length(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"story": {"type": "string"}},
        "required": ["story"],
    }
    choice = client.completions.create(
        model=MODEL,
        prompt="A long story:",
        max_tokens=5,
        temperature=0,
        extra_body={"guided_json": schema},
    ).choices[0]
    assert choice.finish_reason == "length"
    assert choice.text.startswith('{"story'), choice.text  # what was generated, cut short
    with pytest.raises(json.JSONDecodeError):
        json.loads(choice.text)


def _random_schema(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """Bounded: every string, array and object is small, so a completion fits max_tokens."""
    kinds = ["integer", "boolean", "enum", "string", "null"] + (
        ["object", "array"] if depth < 2 else []
    )
    kind = rng.choice(kinds)
    if kind == "integer":
        low = rng.randint(-100, 100)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 1000)}
    if kind == "enum":
        return {"enum": rng.sample(["a", "b", "yes", "no", "x y"], rng.randint(1, 3))}
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(1, 12)}
    if kind == "array":
        return {
            "type": "array",
            "items": _random_schema(rng, depth + 1),
            "maxItems": rng.randint(0, 3),
        }
    if kind == "object":
        names = rng.sample(["id", "name", "tags", "ok", "size", "kind"], rng.randint(1, 3))
        props = {n: _random_schema(rng, depth + 1) for n in names}
        required = [n for n in names if rng.random() < 0.7]
        return {"type": "object", "properties": props, "required": required}
    return {"type": kind}


def test_random_schemas_every_completed_output_validates(client: openai.OpenAI) -> None:
    rng = random.Random(15)
    schemas = [_random_schema(rng) for _ in range(12)]

    def run(schema: dict[str, Any]) -> tuple[str, str | None]:
        choice = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Answer in JSON."}],
            response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
            temperature=0.8,
            seed=1,
            max_tokens=160,
        ).choices[0]
        return choice.message.content, choice.finish_reason

    with ThreadPoolExecutor(6) as pool:  # one engine batch: constrained rows side by side
        results = list(pool.map(run, schemas))
    completed = 0
    for schema, (text, reason) in zip(schemas, results, strict=True):
        if reason == "stop":
            jsonschema.validate(json.loads(text), schema)
            completed += 1
    assert completed >= len(schemas) - 2, results


def test_regex_and_choice(client: openai.OpenAI) -> None:
    text = (
        client.completions.create(
            model=MODEL,
            prompt="Call me at",
            max_tokens=20,
            temperature=0,
            extra_body={"guided_regex": r" \d{3}-\d{4}"},
        )
        .choices[0]
        .text
    )
    assert len(text) == 9 and text[4] == "-" and text.replace("-", "").strip().isdigit(), text
    answers = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Is the sky green?"}],
        max_tokens=10,
        temperature=1.0,
        n=4,  # four sequences, one matcher each
        seed=3,
        extra_body={"structured_outputs": {"choice": ["yes", "no", "not sure"]}},
    ).choices
    assert len(answers) == 4
    for answer in answers:
        assert answer.message.content in ("yes", "no", "not sure")
        assert answer.finish_reason == "stop"


def test_tgi_grammar_on_generate(smol_server: LiveServer) -> None:
    hf = InferenceClient(smol_server.url)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
    }
    text = hf.text_generation(
        "Weather report as JSON:", max_new_tokens=60, grammar={"type": "json", "value": schema}
    )
    jsonschema.validate(json.loads(text), schema)
    digits = hf.text_generation(
        "Pick a number:", max_new_tokens=8, grammar={"type": "regex", "value": "[0-9]{3}"}
    )
    assert len(digits) == 3 and digits.isdigit(), digits
    # The Inference API's shape reaches the same generation path.
    response = httpx.post(
        f"{smol_server.url}/models/{MODEL}",
        json={
            "inputs": "Pick:",
            "parameters": {"grammar": {"type": "regex", "value": "(up|down)"}},
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()[0]["generated_text"] in ("up", "down")


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 20},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
                    "b": {"type": "integer", "minimum": -1000, "maximum": 1000},
                },
                "required": ["a", "b"],
            },
        },
    },
]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def _tool_call_kwargs(tool_choice: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": tool_choice,
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 80,
    }


@pytest.mark.parametrize(
    ("tool_choice", "name"),
    [("required", None), ({"type": "function", "function": {"name": "add"}}, "add")],
)
def test_required_and_named_tools_return_valid_calls(
    client: openai.OpenAI, tool_choice, name
) -> None:  # noqa: ANN001
    kwargs = _tool_call_kwargs(tool_choice)
    choice = client.chat.completions.create(**kwargs).choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert name is None or call.function.name == name
    jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])
    # Streamed deltas reassemble to the same call.
    streamed: dict[int, dict[str, str]] = {}
    reason = None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            reason = c.finish_reason or reason
            for delta in c.delta.tool_calls or []:
                entry = streamed.setdefault(delta.index, {"name": "", "arguments": ""})
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
    assert reason == "tool_calls"
    assert streamed == {0: {"name": call.function.name, "arguments": call.function.arguments}}


def test_multi_turn_with_a_tool_message(client: openai.OpenAI) -> None:
    arguments = json.dumps({"city": "Paris", "unit": "celsius"})
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    choice = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, temperature=0, max_tokens=24
    ).choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    assert choice.message.content or choice.message.tool_calls


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "foo"}},
                }
            },
            "response_format.json_schema.schema",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema",
        ),
        ({"guided_json": {"type": "array", "uniqueItems": True}}, "guided_json"),
        ({"guided_regex": "[a-"}, "guided_regex"),
        ({"guided_grammar": "root ::= undefined"}, "guided_grammar"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
        ),
        ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "response_format"),
    ],
)
def test_what_cannot_be_enforced_is_a_400(smol_server: LiveServer, extra, param) -> None:  # noqa: ANN001
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, **extra}
    response = httpx.post(f"{smol_server.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_bad_tgi_grammar_is_a_400(smol_server: LiveServer) -> None:
    body = {"inputs": "x", "parameters": {"grammar": {"type": "regex", "value": "(a"}}}
    response = httpx.post(f"{smol_server.url}/generate", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert "parameters.grammar" in response.json()["error"]


def test_unconstrained_requests_keep_their_tokens_beside_constrained_ones(
    client: openai.OpenAI,
) -> None:
    prompts = ["The capital of Italy is", "Once upon a time", "def fibonacci(n):"]

    def plain(prompt: str) -> str:
        return (
            client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0)
            .choices[0]
            .text
        )

    def constrained(i: int) -> str:
        return (
            client.completions.create(
                model=MODEL,
                prompt=f"Item {i} as JSON:",
                max_tokens=24,
                temperature=0,
                extra_body={"response_format": {"type": "json_object"}},
            )
            .choices[0]
            .text
        )

    alone = [plain(p) for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        mixed = [pool.submit(plain, p) for p in prompts]
        others = [pool.submit(constrained, i) for i in range(3)]
        assert [f.result() for f in mixed] == alone
        assert all(f.result().startswith("{") for f in others)


def test_metrics_count_constrained_requests(smol_server: LiveServer, client: openai.OpenAI) -> None:
    client.completions.create(
        model=MODEL, prompt="x", max_tokens=2, extra_body={"guided_choice": ["a", "b"]}
    )
    text = httpx.get(f"{smol_server.url}/metrics", timeout=10).text
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("warpserve:structured")
    }
    assert values["warpserve:structured_requests_total"] >= 1
    assert values["warpserve:structured_compiles_total"] >= 1
    assert values["warpserve:structured_mask_steps_total"] >= 1
    assert values["warpserve:structured_mask_seconds_per_step"] > 0
