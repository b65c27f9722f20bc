"""TGI-compatible POST /generate and /generate_stream (and the compat POST /)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from warpserve.outputs import CompletionOutput, RequestOutput, TokenLogprob
from warpserve.request import FinishReason, SamplingParams
from warpserve.server.errors import APIError
from warpserve.server.generation import StreamGroup, cancel_on_disconnect, open_streams
from warpserve.server.hf.grammar import tgi_constraint
from warpserve.server.hf.schemas import GenerateParameters, GenerateRequest
from warpserve.server.prompts import check_stop, encode, fit_max_tokens, make_params
from warpserve.server.sse import event, sse_response
from warpserve.server.state import ServerState, get_state
from warpserve.server.structured import constrain

router = APIRouter(tags=["huggingface"])
DEFAULT_MAX_NEW_TOKENS = 100  # TGI's
_RENAMES = {"max_tokens": "max_new_tokens", "logprobs": "top_n_tokens"}


@router.post("/generate")
async def generate(body: GenerateRequest, request: Request) -> Response:
    return await serve_generate(get_state(request), request, body, stream=False)


@router.post("/generate_stream")
async def generate_stream(body: GenerateRequest, request: Request) -> Response:
    return await serve_generate(get_state(request), request, body, stream=True)


@dataclass(frozen=True)
class _Context:
    prompt_text: str
    params: GenerateParameters
    eos_token_ids: frozenset[int]


async def serve_generate(
    state: ServerState, request: Request, body: GenerateRequest, stream: bool, as_list: bool = False
) -> Response:
    arrival = time.perf_counter()
    state.require_engine(None)
    p = body.parameters
    _reject_unsupported(p)
    check_stop(state, list(p.stop), "parameters.stop")
    ticket = state.admit()  # before any work: tokenizing is work
    try:
        prompt = await encode(state, body.inputs, param="inputs")
        if p.truncate is not None:
            prompt = prompt[-p.truncate :]
        max_tokens = fit_max_tokens(
            state, [prompt], p.max_new_tokens, DEFAULT_MAX_NEW_TOKENS, "max_new_tokens"
        )
        params = tgi_params(p, max_tokens, want_logprobs=stream or p.details)
        params = await constrain(request, params, tgi_constraint(p.grammar))
        group = await open_streams(state, request, [prompt], params, "gen", arrival, ticket)
    finally:
        ticket.release_unless_owned()
    eos = frozenset(state.tokenizer().eos_token_ids)
    ctx = _Context(body.inputs, p, eos)
    if stream:
        return sse_response(group, _events(ctx, group), _error_event, done=None)
    try:
        [output] = await cancel_on_disconnect(request, group.collect())
    finally:
        await group.close()
    result = _full_body(ctx, output)
    return JSONResponse([result] if as_list else result)


def tgi_params(p: GenerateParameters, max_tokens: int, want_logprobs: bool) -> SamplingParams:
    # TGI samples when asked to, or when any warper would change the distribution.
    has_warpers = (
        (p.temperature is not None and p.temperature != 1.0)
        or p.top_k is not None
        or (p.top_p is not None and p.top_p < 1.0)
    )
    sample = p.do_sample or has_warpers
    return make_params(
        _RENAMES,
        max_tokens=max_tokens,
        temperature=(p.temperature or 1.0) if sample else 0.0,
        top_p=p.top_p or 1.0,
        top_k=p.top_k,
        repetition_penalty=p.repetition_penalty or 1.0,
        frequency_penalty=p.frequency_penalty or 0.0,
        seed=p.seed,
        stop=list(p.stop),
        logprobs=(p.top_n_tokens or 0) if want_logprobs or p.top_n_tokens else None,
    )


def _reject_unsupported(p: GenerateParameters) -> None:
    unsupported = {
        "typical_p": p.typical_p is not None,
        "watermark": p.watermark,
        "adapter_id": p.adapter_id is not None,
        "decoder_input_details": p.decoder_input_details,
    }
    for name, is_set in unsupported.items():
        if is_set:
            raise APIError(422, f"parameters.{name} is not supported", param=f"parameters.{name}")


def tgi_finish_reason(choice: CompletionOutput) -> str:
    if choice.finish_reason is FinishReason.STOP:
        return "stop_sequence" if isinstance(choice.stop_reason, str) else "eos_token"
    if choice.finish_reason is FinishReason.LENGTH:
        return "length"
    return "abort"


def _token(ctx: _Context, token_id: int, text: str, logprob: float | None) -> dict[str, object]:
    return {
        "id": token_id,
        "text": text,
        "logprob": logprob,
        "special": token_id in ctx.eos_token_ids,
    }


def _top_tokens(ctx: _Context, entry: TokenLogprob) -> list[dict[str, object]]:
    return [_token(ctx, tid, text, lp) for tid, text, lp in entry.top_logprobs]


def _full_body(ctx: _Context, output: RequestOutput) -> dict[str, object]:
    choice = output.outputs[0]
    text = ctx.prompt_text + choice.text if ctx.params.return_full_text else choice.text
    body: dict[str, object] = {"generated_text": text}
    if ctx.params.details:
        body["details"] = _details(ctx, choice)
    return body


def _details(ctx: _Context, choice: CompletionOutput) -> dict[str, object]:
    logprobs = choice.logprobs or []
    details: dict[str, object] = {
        "finish_reason": tgi_finish_reason(choice),
        "generated_tokens": len(choice.token_ids),
        "seed": ctx.params.seed,
        "prefill": [],
        "tokens": [_token(ctx, e.token_id, e.token, e.logprob) for e in logprobs],
        "best_of_sequences": None,
    }
    if ctx.params.top_n_tokens:
        details["top_tokens"] = [_top_tokens(ctx, e) for e in logprobs]
    return details


async def _events(ctx: _Context, group: StreamGroup) -> AsyncIterator[str]:
    """One event per token. When one output carries several tokens, their text goes on the
    last, so the events' texts always concatenate to the generated text."""
    num_tokens, text_len = 0, 0
    async for _, out in group.merged():
        choice = out.outputs[0]
        for payload in _token_events(ctx, out, num_tokens, choice.text[text_len:]):
            yield event(payload, prefix="data:")
        num_tokens, text_len = len(choice.token_ids), len(choice.text)


def _token_events(
    ctx: _Context, out: RequestOutput, num_seen: int, delta: str
) -> list[dict[str, object]]:
    choice = out.outputs[0]
    new_ids = choice.token_ids[num_seen:]
    if out.finished and not new_ids and choice.token_ids:  # ended without a new token
        new_ids, num_seen = choice.token_ids[-1:], num_seen - 1
    logprobs = (choice.logprobs or [])[num_seen:]
    payloads = []
    for i, token_id in enumerate(new_ids):
        is_last = i == len(new_ids) - 1
        entry = logprobs[i] if i < len(logprobs) else None
        logprob = entry.logprob if entry else None
        payload: dict[str, object] = {
            "index": num_seen + i + 1,
            "token": _token(ctx, token_id, delta if is_last else "", logprob),
            "generated_text": None,
            "details": None,
        }
        if ctx.params.top_n_tokens and entry is not None:
            payload["top_tokens"] = _top_tokens(ctx, entry)
        if is_last and out.finished:
            payload["generated_text"] = _full_body(ctx, out)["generated_text"]
            payload["details"] = {
                "finish_reason": tgi_finish_reason(choice),
                "generated_tokens": len(choice.token_ids),
                "seed": ctx.params.seed,
            }
        payloads.append(payload)
    return payloads


def _error_event(err: APIError) -> str:
    return event(err.tgi_body(), prefix="data:")
