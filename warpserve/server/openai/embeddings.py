"""POST /v1/embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from warpserve.server.embedding import check_inputs, embed, encode_vector
from warpserve.server.errors import bad_request
from warpserve.server.openai.schemas import EmbeddingRequest
from warpserve.server.state import get_state

router = APIRouter(tags=["openai"])


@router.post("/v1/embeddings")
async def create_embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    state = get_state(request)
    embedder = state.require_embedder(body.model)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    is_batch = not isinstance(body.input, str)
    check_inputs(state, request, texts, "input", is_batch)
    # OpenAI's API has no truncation switch: too long is an error naming the limit
    vectors, num_tokens = await embed(
        state, request, embedder, texts, True, False, "input", is_batch
    )
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise bad_request(
            f"dimensions must be {vectors.shape[1]} for this model", param="dimensions"
        )
    data = [
        {"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": state.embedding_model_name,
            "usage": {"prompt_tokens": num_tokens, "total_tokens": num_tokens},
        }
    )
