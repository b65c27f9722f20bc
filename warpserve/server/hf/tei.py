"""TEI-compatible POST /embed, /rerank (a cross-encoder) and /predict (a classifier).

Limits are checked before anything is tokenized, and each call is admitted like a
generation (server/embedding.py).
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from warpserve.server.embedding import admitted, call_encoder, check_inputs, embed, too_large
from warpserve.server.errors import APIError
from warpserve.server.hf.schemas import EmbedRequest, PredictRequest, RerankRequest
from warpserve.server.state import ServerState, get_state

router = APIRouter(tags=["huggingface"])


@router.post("/embed")
async def embed_route(body: EmbedRequest, request: Request) -> JSONResponse:
    return JSONResponse(await serve_embed(get_state(request), request, body))


@router.post("/rerank")
async def rerank_route(body: RerankRequest, request: Request) -> JSONResponse:
    return JSONResponse(await serve_rerank(get_state(request), request, body))


@router.post("/predict")
async def predict_route(body: PredictRequest, request: Request) -> JSONResponse:
    return JSONResponse(await serve_predict(get_state(request), request, body))


async def serve_embed(
    state: ServerState, request: Request, body: EmbedRequest
) -> list[list[float]]:
    embedder = state.require_embedder(None, "embed")
    _check_direction(body.truncation_direction)
    if body.prompt_name is not None:
        raise APIError(422, "prompt_name is not supported", param="prompt_name")
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    is_batch = not isinstance(body.inputs, str)
    check_inputs(state, request, texts, "inputs", is_batch)
    vectors, _ = await embed(
        state, request, embedder, texts, body.normalize, body.truncate, "inputs", is_batch
    )
    if body.dimensions is not None:
        if body.dimensions > vectors.shape[1]:
            raise APIError(422, f"dimensions must be <= {vectors.shape[1]}", param="dimensions")
        vectors = vectors[:, : body.dimensions]
    return vectors.tolist()


async def serve_rerank(
    state: ServerState, request: Request, body: RerankRequest
) -> list[dict[str, object]]:
    reranker = state.require_embedder(None, "rerank")
    _check_direction(body.truncation_direction)
    check_inputs(state, request, body.texts, "texts", max_texts=state.config.max_rerank_texts)
    max_query_chars = state.config.max_rerank_query_chars
    if len(body.query) > max_query_chars:
        message = (
            f"query has {len(body.query)} characters, more than the limit of {max_query_chars}"
        )
        raise too_large(request, message, "query")
    with admitted(state):
        work = reranker.rerank(body.query, list(body.texts), truncate=body.truncate)
        scores = await call_encoder(state, request, work, "texts")
    ranked = []
    for index, score in enumerate(scores):
        entry: dict[str, object] = {
            "index": index,
            "score": float(score) if body.raw_scores else _sigmoid(float(score)),
        }
        if body.return_text:
            entry["text"] = body.texts[index]
        ranked.append(entry)
    return sorted(ranked, key=lambda e: -e["score"])  # type: ignore[operator]


async def serve_predict(
    state: ServerState, request: Request, body: PredictRequest
) -> list[dict[str, object]] | list[list[dict[str, object]]]:
    classifier = state.require_embedder(None, "classify")
    _check_direction(body.truncation_direction)
    is_single = isinstance(body.inputs, str)
    texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
    check_inputs(state, request, texts, "inputs", not is_single)
    with admitted(state):
        work = classifier.classify(texts, truncate=body.truncate)
        results = await call_encoder(state, request, work, "inputs", not is_single)
    labelled = [[{"label": label, "score": float(score)} for label, score in r] for r in results]
    return labelled[0] if is_single else labelled


def _check_direction(direction: str) -> None:
    if direction.lower() != "right":
        raise APIError(
            422, "only truncation_direction 'right' is supported", param="truncation_direction"
        )


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
