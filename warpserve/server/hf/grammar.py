"""TGI's `parameters.grammar` -> a GrammarRequest: {"type": "json", "value": schema},
{"type": "regex", "value": pattern}, or {"type": "json_schema", "value": {"schema": ...}}.
The Inference API's text generation takes the same parameters, so it gets this too."""

from __future__ import annotations

import json

from warpserve.server.errors import bad_request
from warpserve.server.hf.schemas import TGIGrammar
from warpserve.structured.spec import GrammarRequest, StructuredKind

PARAM = "parameters.grammar"


def tgi_constraint(grammar: TGIGrammar | None) -> tuple[GrammarRequest, str] | None:
    if grammar is None:
        return None
    value = grammar.value
    if grammar.type == "regex":
        if not isinstance(value, str) or not value:
            raise bad_request("a regex grammar's value must be a non-empty string", param=PARAM)
        return GrammarRequest(StructuredKind.REGEX, value), PARAM
    if grammar.type == "json_schema":
        schema = value.get("schema") if isinstance(value, dict) else None
        if schema is None:
            raise bad_request("a json_schema grammar's value needs a schema", param=PARAM)
        value = schema
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise bad_request(f"{PARAM}.value is not valid JSON: {exc}", param=PARAM) from None
    if not isinstance(value, dict | bool):
        raise bad_request(f"{PARAM}.value must be a JSON Schema object", param=PARAM)
    return GrammarRequest(StructuredKind.JSON_SCHEMA, json.dumps(value)), PARAM
