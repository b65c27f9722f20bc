"""Tool calling in the Hermes format: the prompt template and the grammar of a call.

A call is `<tool_call>\n{"name": "...", "arguments": {...}}\n</tool_call>` (NousResearch
Hermes 2 Pro; Qwen2.5 and others use the same). Models whose own chat template has no
tool support (SmolLM2's) get HERMES_TEMPLATE, a ChatML template that lists the tools in
the system turn and wraps tool results in <tool_response>.

`tool_choice` becomes an xgrammar structural tag: each tool is a tag whose begin string
fixes the name and whose content is the JSON Schema of its parameters, so a call always
names a real tool and its arguments always validate.
- "required" / a named tool: only calls, at least one (one when parallel_tool_calls is
  false, or the tool is named);
- "auto": free text, and any `<tool_call>` the model starts is constrained to a valid call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from warpserve.structured.spec import GrammarRequest, StructuredKind

CALL_START = "<tool_call>"
CALL_END = "</tool_call>"


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str | None
    parameters: dict[str, Any]  # JSON Schema of the arguments ({"type": "object"} if none)

    def as_openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}


def call_prefix(name: str) -> str:
    """Everything of a call up to its arguments' value."""
    return f'{CALL_START}\n{{"name": {json.dumps(name)}, "arguments": '


CALL_SUFFIX = "}\n" + CALL_END


def tool_call_grammar(tools: list[ToolSpec], choice: str, parallel: bool) -> GrammarRequest | None:
    """choice: "none" | "auto" | "required" | a tool's name (already checked to exist)."""
    if choice == "none" or not tools:
        return None
    if choice not in ("auto", "required"):
        tools = [t for t in tools if t.name == choice]
        parallel = False
    tags = [
        {"begin": call_prefix(t.name), "content": _schema_format(t), "end": CALL_SUFFIX}
        for t in tools
    ]
    if choice == "auto":
        fmt: dict[str, Any] = {
            "type": "triggered_tags",
            "triggers": [CALL_START],
            "tags": tags,
            "stop_after_first": not parallel,
        }
    else:
        fmt = {
            "type": "tags_with_separator",
            "tags": tags,
            "separator": "\n",
            "at_least_one": True,
            "stop_after_first": not parallel,
        }
    tag = {"type": "structural_tag", "format": fmt}
    return GrammarRequest(StructuredKind.STRUCTURAL_TAG, json.dumps(tag))


def _schema_format(tool: ToolSpec) -> dict[str, Any]:
    # At most one whitespace character in a row: a small model free to indent can loop on it.
    return {"type": "json_schema", "json_schema": tool.parameters, "max_whitespace_cnt": 1}


# ChatML, with Hermes 2 Pro's tool conventions. `tools` is the OpenAI list.
HERMES_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}
{{- 'You are a function calling AI model. You may call one or more functions to assist with the user query. The function signatures are within <tools></tools> XML tags:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
{{- '\\n</tools>\\n\\nFor each function call, return a JSON object with the function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0]['role'] == 'system' %}
{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message['role'] == 'system' and loop.first %}
{%- elif message['role'] == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- elif message['role'] == 'assistant' and message.get('tool_calls') %}
{{- '<|im_start|>assistant' }}
{%- if message['content'] %}{{- '\\n' + message['content'] }}{%- endif %}
{%- for call in message['tool_calls'] %}
{{- '\\n<tool_call>\\n{\"name\": ' + (call['function']['name'] | tojson) + ', \"arguments\": ' + call['function']['arguments'] + '}\\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""


def template_has_tools(chat_template: str | None) -> bool:
    """Whether a model's own chat template renders `tools` (else HERMES_TEMPLATE is used)."""
    return bool(chat_template) and "tools" in chat_template  # type: ignore[operator]
