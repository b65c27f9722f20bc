"""TGI-compatible POST /tokenize: the prompt's tokens with their text and character spans."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from warpserve.server.hf.schemas import TokenizeRequest
from warpserve.server.prompts import encode
from warpserve.server.state import Tokenizer, get_state

router = APIRouter(tags=["huggingface"])


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> JSONResponse:
    state = get_state(request)
    token_ids = await encode(state, body.inputs, body.add_special_tokens)
    return JSONResponse(token_spans(state.tokenizer(), token_ids))


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
