"""POST /v1/completions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from warpserve.outputs import RequestOutput
from warpserve.server.errors import APIError, bad_request
from warpserve.server.generation import StreamGroup, cancel_on_disconnect, open_streams
from warpserve.server.openai.formatting import (
    ChoiceDelta,
    DeltaTracker,
    completion_logprobs,
    usage,
)
from warpserve.server.openai.params import check_stream_options, sampling_params
from warpserve.server.openai.schemas import CompletionRequest
from warpserve.server.openai.structured import openai_constraint
from warpserve.server.prompts import check_request_size, encode_prompts, fit_max_tokens
from warpserve.server.sse import event, sse_response
from warpserve.server.state import ServerState, get_state
from warpserve.server.structured import constrain

router = APIRouter(tags=["openai"])


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    return await serve_completion(get_state(request), request, body)


@dataclass(frozen=True)
class _Context:
    id: str
    created: int
    model: str
    n: int
    echo_texts: list[str] | None  # per prompt, when echo is on
    include_usage: bool


async def serve_completion(
    state: ServerState, request: Request, body: CompletionRequest
) -> Response:
    arrival = time.perf_counter()
    state.require_engine(body.model)
    _reject_unsupported(body)
    ticket = state.admit()  # before any work: tokenizing a batch is work
    try:
        prompts = await encode_prompts(state, body.prompt, "prompt")
        check_request_size(state, len(prompts), body.n)
        max_tokens = fit_max_tokens(state, prompts, body.max_tokens, 16, "max_tokens")
        params = sampling_params(state, body, max_tokens, body.logprobs)
        params = await constrain(request, params, openai_constraint(body))
        group = await open_streams(state, request, prompts, params, "cmpl", arrival, ticket)
    finally:
        ticket.release_unless_owned()
    ctx = _Context(
        id=group.streams[0].request_id,
        created=int(time.time()),
        model=state.model_name or "",
        n=body.n,
        echo_texts=_echo_texts(state, body, prompts) if body.echo else None,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )
    if body.stream:
        return sse_response(group, _events(ctx, group), _error_event)
    try:
        outputs = await cancel_on_disconnect(request, group.collect())
    finally:
        await group.close()
    return JSONResponse(_full_body(ctx, outputs))


def _reject_unsupported(body: CompletionRequest) -> None:
    check_stream_options(body)
    if body.suffix:
        raise bad_request("suffix is not supported", param="suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise bad_request("best_of other than n is not supported", param="best_of")
    if body.echo and body.logprobs is not None:
        raise bad_request("echo with logprobs (prompt logprobs) is not supported", param="echo")


def _echo_texts(state: ServerState, body: CompletionRequest, prompts: list[list[int]]) -> list[str]:
    if isinstance(body.prompt, str):
        return [body.prompt]
    if all(isinstance(p, str) for p in body.prompt):
        return list(body.prompt)  # type: ignore[arg-type]
    return [state.tokenizer().decode(ids) for ids in prompts]


def _choice(ctx: _Context, delta: ChoiceDelta, is_first: bool) -> dict[str, object]:
    text = delta.text
    offset = delta.text_offset
    if ctx.echo_texts is not None:
        echo = ctx.echo_texts[delta.index // ctx.n]
        text = echo + text if is_first else text
        offset += len(echo)
    logprobs = None
    if delta.logprobs is not None:
        logprobs = completion_logprobs(delta.logprobs, offset)
    return {
        "index": delta.index,
        "text": text,
        "logprobs": logprobs,
        "finish_reason": delta.finish_reason,
        "stop_reason": delta.stop_reason,
    }


def _full_body(ctx: _Context, outputs: list[RequestOutput]) -> dict[str, object]:
    tracker = DeltaTracker(ctx.n)
    choices = [
        _choice(ctx, delta, is_first=True)
        for prompt_index, out in enumerate(outputs)
        for delta in tracker.deltas(prompt_index, out)
    ]
    choices.sort(key=lambda c: c["index"])  # type: ignore[arg-type, return-value]
    return {**_header(ctx), "choices": choices, "usage": usage(outputs)}


def _header(ctx: _Context) -> dict[str, object]:
    return {
        "id": ctx.id,
        "object": "text_completion",
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": None,
    }


async def _events(ctx: _Context, group: StreamGroup) -> AsyncIterator[str]:
    tracker = DeltaTracker(ctx.n)
    seen: set[int] = set()
    finals: dict[int, RequestOutput] = {}
    async for prompt_index, out in group.merged():
        choices = []
        for delta in tracker.deltas(prompt_index, out):
            choices.append(_choice(ctx, delta, is_first=delta.index not in seen))
            seen.add(delta.index)
        if choices:
            extra = {"usage": None} if ctx.include_usage else {}
            yield event({**_header(ctx), "choices": choices, **extra})
        if out.finished:
            finals[prompt_index] = out
    if ctx.include_usage:
        ordered = [finals[i] for i in sorted(finals)]
        yield event({**_header(ctx), "choices": [], "usage": usage(ordered)})


def _error_event(err: APIError) -> str:
    return event(err.openai_body())
