"""POST /v1/chat/completions: messages -> the model's chat template -> generation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from warpserve.outputs import RequestOutput
from warpserve.server.errors import APIError, bad_request
from warpserve.server.generation import StreamGroup, cancel_on_disconnect, open_streams
from warpserve.server.openai.formatting import ChoiceDelta, DeltaTracker, chat_logprobs, usage
from warpserve.server.openai.params import check_stream_options, sampling_params
from warpserve.server.openai.schemas import ChatCompletionRequest, ChatMessage
from warpserve.server.openai.structured import openai_constraint
from warpserve.server.openai.tools import (
    ToolDeltas,
    encode_tool_chat,
    needs_tool_template,
    tool_constraint,
    tool_finish_reason,
    tool_message,
    tool_plan,
)
from warpserve.server.prompts import check_chat_messages, encode_chat, fit_max_tokens
from warpserve.server.sse import event, sse_response
from warpserve.server.state import ServerState, get_state
from warpserve.server.structured import constrain

router = APIRouter(tags=["openai"])


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    return await serve_chat(get_state(request), request, body)


@dataclass(frozen=True)
class _Context:
    id: str
    created: int
    model: str
    n: int
    num_top_logprobs: int
    include_usage: bool
    # Tool calls are parsed out of the text: one streaming parser per choice.
    tool_streams: dict[int, ToolDeltas] | None = None


async def serve_chat(state: ServerState, request: Request, body: ChatCompletionRequest) -> Response:
    arrival = time.perf_counter()
    state.require_engine(body.model)
    _reject_unsupported(body)
    plan = tool_plan(body)
    check_chat_messages(state, len(body.messages))
    ticket = state.admit()  # before any work: applying the template and tokenizing are work
    try:
        if needs_tool_template(body):
            prompt = await encode_tool_chat(state, body, plan)
        else:
            prompt = await encode_chat(state, [template_message(m) for m in body.messages])
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        requested = body.max_completion_tokens or body.max_tokens
        max_tokens = fit_max_tokens(state, [prompt], requested, None, param)
        num_top = body.top_logprobs or 0
        params = sampling_params(state, body, max_tokens, num_top if body.logprobs else None)
        asked = tool_constraint(plan, body.parallel_tool_calls) or openai_constraint(body)
        params = await constrain(request, params, asked)
        group = await open_streams(state, request, [prompt], params, "chatcmpl", arrival, ticket)
    finally:
        ticket.release_unless_owned()
    ctx = _Context(
        id=group.streams[0].request_id,
        created=int(time.time()),
        model=state.model_name or "",
        n=body.n,
        num_top_logprobs=num_top,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        tool_streams={} if plan is not None and plan.parses_calls else None,
    )
    if body.stream:
        return sse_response(group, _events(ctx, group), _error_event)
    try:
        [output] = await cancel_on_disconnect(request, group.collect())
    finally:
        await group.close()
    return JSONResponse(_full_body(ctx, output))


def template_message(message: ChatMessage) -> dict[str, str]:
    """One message as chat templates expect it: a role and plain-text content."""
    role = "system" if message.role == "developer" else message.role
    content = message.content
    if isinstance(content, list):
        content = "".join(part.text for part in content)
    return {"role": role, "content": content or ""}


def _reject_unsupported(body: ChatCompletionRequest) -> None:
    check_stream_options(body)
    if body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs needs logprobs: true", param="top_logprobs")


def _choice_logprobs(ctx: _Context, delta: ChoiceDelta) -> dict[str, list] | None:
    if delta.logprobs is None:
        return None
    return chat_logprobs(delta.logprobs, ctx.num_top_logprobs)


def _full_body(ctx: _Context, output: RequestOutput) -> dict[str, object]:
    choices = [
        {
            "index": delta.index,
            **_message(ctx, delta),
            "logprobs": _choice_logprobs(ctx, delta),
            "stop_reason": delta.stop_reason,
        }
        for delta in DeltaTracker(ctx.n).deltas(0, output)
    ]
    choices.sort(key=lambda c: c["index"])  # type: ignore[arg-type, return-value]
    return {**_header(ctx, "chat.completion"), "choices": choices, "usage": usage([output])}


def _message(ctx: _Context, delta: ChoiceDelta) -> dict[str, object]:
    if ctx.tool_streams is None:
        message = {"role": "assistant", "content": delta.text}
        return {"message": message, "finish_reason": delta.finish_reason}
    message = tool_message(delta.text)
    num_calls = len(message.get("tool_calls", ()))
    return {"message": message, "finish_reason": tool_finish_reason(delta.finish_reason, num_calls)}


def _header(ctx: _Context, kind: str) -> dict[str, object]:
    return {
        "id": ctx.id,
        "object": kind,
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": None,
    }


def _chunk(ctx: _Context, choices: list[dict[str, object]]) -> str:
    extra = {"usage": None} if ctx.include_usage else {}
    return event({**_header(ctx, "chat.completion.chunk"), "choices": choices, **extra})


async def _events(ctx: _Context, group: StreamGroup) -> AsyncIterator[str]:
    role: dict[str, object] = {"role": "assistant", "content": ""}
    yield _chunk(ctx, [_delta_choice(i, role, None, None) for i in range(ctx.n)])
    tracker = DeltaTracker(ctx.n)
    last: RequestOutput | None = None
    async for _, out in group.merged():
        last = out
        if ctx.tool_streams is not None:
            for choice in _tool_choices(ctx, tracker.deltas(0, out)):
                yield _chunk(ctx, [choice])
            continue
        choices = [
            _delta_choice(
                d.index,
                {"content": d.text} if d.text else {},
                _choice_logprobs(ctx, d),
                d.finish_reason,
            )
            for d in tracker.deltas(0, out)
        ]
        if choices:
            yield _chunk(ctx, choices)
    if ctx.include_usage and last is not None:
        yield event(
            {**_header(ctx, "chat.completion.chunk"), "choices": [], "usage": usage([last])}
        )


def _tool_choices(ctx: _Context, deltas: list[ChoiceDelta]) -> list[dict[str, object]]:
    """Content and tool-call deltas, then the finish reason, one choice entry each."""
    assert ctx.tool_streams is not None
    choices = []
    for d in deltas:
        stream = ctx.tool_streams.setdefault(d.index, ToolDeltas())
        is_last = d.finish_reason is not None
        choices += [_delta_choice(d.index, x, None, None) for x in stream.deltas(d.text, is_last)]
        if is_last:
            reason = tool_finish_reason(d.finish_reason, stream.num_calls)
            choices.append(_delta_choice(d.index, {}, None, reason))
    return choices


def _delta_choice(
    index: int, delta: dict[str, object], logprobs: dict[str, list] | None, reason: str | None
) -> dict[str, object]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}


def _error_event(err: APIError) -> str:
    return event(err.openai_body())
