"""TGI-compatible POST /tokenize: the prompt's tokens with their text and character spans.

An answer is one JSON object per token, so the input is capped in characters before it is
tokenized (`ServerConfig.max_tokenize_chars`), the call holds a concurrency ticket, and
long inputs are tokenized and decoded off the event loop.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from warpserve.server.embedding import admitted, too_large
from warpserve.server.hf.schemas import TokenizeRequest
from warpserve.server.prompts import encode
from warpserve.server.state import Tokenizer, get_state

router = APIRouter(tags=["huggingface"])
_INLINE_SPANS = 128  # tokens decoded on the event loop; more go to the tokenizer thread


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> JSONResponse:
    state = get_state(request)
    tokenizer = state.tokenizer()
    max_chars = state.config.max_tokenize_chars
    if len(body.inputs) > max_chars:
        message = f"inputs has {len(body.inputs)} characters, more than the limit of {max_chars}"
        raise too_large(request, message, "inputs")
    with admitted(state):
        token_ids = await encode(state, body.inputs, body.add_special_tokens)
        if len(token_ids) <= _INLINE_SPANS:
            return JSONResponse(token_spans(tokenizer, token_ids))
        loop = asyncio.get_running_loop()
        spans = await loop.run_in_executor(state.tokenizer_pool, token_spans, tokenizer, token_ids)
    return JSONResponse(spans)


def token_spans(tokenizer: Tokenizer, token_ids: list[int]) -> list[dict[str, object]]:
    """Each token's own text; spans are where those texts fall when laid end to end."""
    spans, position = [], 0
    for token_id in token_ids:
        text = tokenizer.decode([token_id], skip_special_tokens=False)
        spans.append(
            {"id": token_id, "text": text, "start": position, "stop": position + len(text)}
        )
        position += len(text)
    return spans
