"""Tools on /v1/chat/completions: the request's tools -> prompt and grammar; the output's
Hermes tool calls -> OpenAI `tool_calls`, whole or as streamed deltas.

See warpserve/structured/tools.py for the format and how each tool_choice is enforced.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from warpserve.server.errors import bad_request
from warpserve.server.openai.schemas import ChatCompletionRequest, ChatMessage
from warpserve.server.prompts import encode
from warpserve.server.state import ServerState
from warpserve.structured.spec import GrammarRequest
from warpserve.structured.tool_parser import (
    ArgumentsDelta,
    ContentDelta,
    Event,
    HermesToolParser,
    ToolCallStart,
    parse_all,
)
from warpserve.structured.tools import (
    HERMES_TEMPLATE,
    ToolSpec,
    template_has_tools,
    tool_call_grammar,
)


@dataclass(frozen=True)
class ToolPlan:
    tools: list[ToolSpec]
    choice: str  # "none" | "auto" | "required" | a tool's name

    @property
    def parses_calls(self) -> bool:
        return self.choice != "none"


def tool_plan(body: ChatCompletionRequest) -> ToolPlan | None:
    """The request's tools and tool_choice, checked; None without tools."""
    choice = body.tool_choice
    name = choice if isinstance(choice, str) or choice is None else choice.function.name
    if not body.tools:
        if name not in (None, "none"):
            raise bad_request("tool_choice needs tools", param="tool_choice")
        return None
    tools = [
        ToolSpec(t.function.name, t.function.description, t.function.parameters or _EMPTY)
        for t in body.tools
    ]
    if len({t.name for t in tools}) != len(tools):
        raise bad_request("tools have duplicate function names", param="tools")
    if name is None:
        name = "auto"
    elif not isinstance(choice, str) and name not in {t.name for t in tools}:
        raise bad_request(f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
    plan = ToolPlan(tools, name)
    if plan.parses_calls and _has_response_format(body):
        raise bad_request(
            "response_format cannot be combined with tools (use tool_choice 'none')",
            param="response_format",
        )
    return plan


_EMPTY: dict[str, Any] = {"type": "object", "properties": {}}


def _has_response_format(body: ChatCompletionRequest) -> bool:
    fmt = body.response_format
    return fmt is not None and fmt.type != "text"


def tool_constraint(plan: ToolPlan | None, parallel: bool) -> tuple[GrammarRequest, str] | None:
    if plan is None:
        return None
    grammar = tool_call_grammar(plan.tools, plan.choice, parallel)
    return None if grammar is None else (grammar, "tools")


def needs_tool_template(body: ChatCompletionRequest) -> bool:
    return bool(body.tools) or any(m.role == "tool" or m.tool_calls for m in body.messages)


async def encode_tool_chat(
    state: ServerState, body: ChatCompletionRequest, plan: ToolPlan | None
) -> list[int]:
    """The chat with tools listed (unless tool_choice is none) and tool turns rendered:
    by the model's own template when it knows tools, else by warpserve's Hermes template."""
    tokenizer: Any = state.tokenizer()
    kwargs: dict[str, Any] = {}
    if plan is not None and plan.parses_calls:
        kwargs["tools"] = [t.as_openai() for t in plan.tools]
    if not template_has_tools(getattr(getattr(tokenizer, "hf", None), "chat_template", None)):
        kwargs["chat_template"] = HERMES_TEMPLATE
    messages = [_template_message(m) for m in body.messages]
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs)
    except ValueError as exc:
        raise bad_request(f"messages: {exc}", param="messages") from None
    return await encode(state, text, add_special_tokens=False)


def _template_message(message: ChatMessage) -> dict[str, Any]:
    role = "system" if message.role == "developer" else message.role
    content = message.content
    if isinstance(content, list):
        content = "".join(part.text for part in content)
    out: dict[str, Any] = {"role": role, "content": content or ""}
    if message.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def tool_message(text: str) -> dict[str, Any]:
    """The non-streamed assistant message of a tools request."""
    content, calls = parse_all(text)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": _call_id(), "type": "function", "function": {"name": n, "arguments": a}}
            for n, a in calls
        ]
    return message


def tool_finish_reason(reason: str | None, num_calls: int) -> str | None:
    """OpenAI says "tool_calls" when the model stopped after calling; "length" stays."""
    return "tool_calls" if reason == "stop" and num_calls else reason


def count_calls(text: str) -> int:
    return len(parse_all(text)[1])


@dataclass
class ToolDeltas:
    """One choice's streamed text -> OpenAI chunk deltas (content and tool_calls)."""

    parser: HermesToolParser = field(default_factory=HermesToolParser)

    def deltas(self, text: str, is_last: bool) -> list[dict[str, Any]]:
        events = self.parser.feed(text)
        if is_last:
            events += self.parser.finish()
        return [_delta(e) for e in events if not (isinstance(e, ContentDelta) and not e.text)]

    @property
    def num_calls(self) -> int:
        return self.parser.num_calls


def _delta(event: Event) -> dict[str, Any]:
    if isinstance(event, ContentDelta):
        return {"content": event.text}
    if isinstance(event, ToolCallStart):
        call = {"name": event.name, "arguments": ""}
        first = {"index": event.index, "id": _call_id(), "type": "function", "function": call}
        return {"tool_calls": [first]}
    assert isinstance(event, ArgumentsDelta)
    return {"tool_calls": [{"index": event.index, "function": {"arguments": event.text}}]}


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"
