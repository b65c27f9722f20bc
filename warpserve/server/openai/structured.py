"""OpenAI and vLLM structured-output fields -> one GrammarRequest (or None).

OpenAI: `response_format` {"type": "json_object"} / {"type": "json_schema", ...}.
vLLM: `structured_outputs` {json | regex | choice | grammar | json_object | structural_tag}
and the older `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`.
A request may ask for one constraint; two are a 400, never a silent pick.
"""

from __future__ import annotations

import json
from typing import Any

from warpserve.server.errors import bad_request
from warpserve.server.openai.schemas import SamplingFields
from warpserve.structured.spec import GrammarRequest, StructuredKind

K = StructuredKind


def openai_constraint(body: SamplingFields) -> tuple[GrammarRequest, str] | None:
    """The one constraint the body asks for and the field that asked, or None."""
    found = [c for c in _candidates(body) if c is not None]
    if len(found) > 1:
        names = ", ".join(param for _, param in found)
        raise bad_request(
            f"ask for one structured output at a time, not {names}", param=found[1][1]
        )
    return found[0] if found else None


def _candidates(body: SamplingFields) -> list[tuple[GrammarRequest, str] | None]:
    out = body.structured_outputs
    return [
        _response_format(body),
        _schema(body.guided_json, "guided_json"),
        _text(K.REGEX, body.guided_regex, "guided_regex"),
        _choice(body.guided_choice, "guided_choice"),
        _text(K.GRAMMAR, body.guided_grammar, "guided_grammar"),
        *([] if out is None else _structured_outputs(out)),
    ]


def _response_format(body: SamplingFields) -> tuple[GrammarRequest, str] | None:
    fmt = body.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return GrammarRequest(K.JSON_OBJECT, ""), "response_format"
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise bad_request(
            "response_format type json_schema needs json_schema.schema",
            param="response_format.json_schema",
        )
    return _schema(fmt.json_schema.schema_, "response_format.json_schema.schema")


def _structured_outputs(out: Any) -> list[tuple[GrammarRequest, str] | None]:
    tag = out.structural_tag
    return [
        _schema(out.json_, "structured_outputs.json"),
        _text(K.REGEX, out.regex, "structured_outputs.regex"),
        _choice(out.choice, "structured_outputs.choice"),
        _text(K.GRAMMAR, out.grammar, "structured_outputs.grammar"),
        (GrammarRequest(K.JSON_OBJECT, ""), "structured_outputs.json_object")
        if out.json_object
        else None,
        None
        if tag is None
        else (
            GrammarRequest(K.STRUCTURAL_TAG, _json_text(tag)),
            "structured_outputs.structural_tag",
        ),
    ]


def _schema(schema: str | dict[str, Any] | None, param: str) -> tuple[GrammarRequest, str] | None:
    if schema is None:
        return None
    text = _json_text(schema)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(f"{param} is not valid JSON: {exc}", param=param) from None
    if not isinstance(parsed, dict | bool):
        raise bad_request(f"{param} must be a JSON Schema object", param=param)
    return GrammarRequest(K.JSON_SCHEMA, text), param


def _text(kind: StructuredKind, text: str | None, param: str) -> tuple[GrammarRequest, str] | None:
    if text is None:
        return None
    if not text:
        raise bad_request(f"{param} must not be empty", param=param)
    return GrammarRequest(kind, text), param


def _choice(choices: list[str] | None, param: str) -> tuple[GrammarRequest, str] | None:
    if choices is None:
        return None
    if not all(choices):
        raise bad_request(f"{param} entries must not be empty", param=param)
    return GrammarRequest(K.CHOICE, json.dumps(choices)), param


def _json_text(value: str | dict[str, Any]) -> str:
    return value if isinstance(value, str) else json.dumps(value)
