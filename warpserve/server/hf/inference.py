"""The Inference API shape: POST /models/{model_id} (and POST /, as TGI and TEI answer it)
with `{"inputs", "parameters"}`, dispatched by the task of the model it names.

This is where `huggingface_hub.InferenceClient(model=<url>)` posts text_generation,
feature_extraction, sentence_similarity and text_classification.
"""

from __future__ import annotations

import json
from typing import TypeVar

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from warpserve.server.errors import APIError, unknown_model, validation_error
from warpserve.server.hf.generate import serve_generate
from warpserve.server.hf.schemas import (
    EmbedRequest,
    GenerateRequest,
    InferenceRequest,
    PredictRequest,
)
from warpserve.server.hf.tei import serve_embed, serve_predict
from warpserve.server.state import ServerState, get_state

router = APIRouter(tags=["huggingface"])
M = TypeVar("M", bound=BaseModel)


@router.post("/models/{model_id:path}")
async def run_model(model_id: str, body: InferenceRequest, request: Request) -> Response:
    state = get_state(request)
    if model_id == state.model_name:
        return await _generate(state, request, body, as_list=True)
    if model_id == state.embedding_model_name:
        return await _encode(state, request, body)
    raise unknown_model(model_id, state.served_models())


@router.post("/")
async def run_default(body: InferenceRequest, request: Request) -> Response:
    """TGI answers POST / with generation, TEI with its model's task: both live here."""
    state = get_state(request)
    wants_generation = body.parameters is not None or body.stream
    if state.engine is not None and (wants_generation or state.embedder is None):
        return await _generate(state, request, body, as_list=False)
    if state.embedder is not None:
        return await _encode(state, request, body)
    raise APIError(404, "no model is loaded")


async def _generate(
    state: ServerState, request: Request, body: InferenceRequest, as_list: bool
) -> Response:
    payload = {"inputs": body.inputs, "parameters": body.parameters or {}}
    generate = _parse(GenerateRequest, payload)
    return await serve_generate(state, request, generate, stream=body.stream, as_list=as_list)


async def _encode(state: ServerState, request: Request, body: InferenceRequest) -> Response:
    assert state.embedder is not None  # callers checked
    # TEI reads options at the top level, the Inference API under "parameters": take both.
    options = {**(body.model_extra or {}), **(body.parameters or {})}
    if state.embedder.task == "classify":
        predict = _parse(PredictRequest, {**_truncation(options), "inputs": body.inputs})
        labels = await serve_predict(state, request, predict)
        # The Inference API answers a batch even for one text; TEI's /predict does not.
        return JSONResponse([labels] if isinstance(predict.inputs, str) else labels)
    if isinstance(body.inputs, dict):
        return JSONResponse(await _similarity(state, request, body.inputs, options))
    embed = _parse(EmbedRequest, {**options, "inputs": body.inputs})
    return JSONResponse(await serve_embed(state, request, embed))


async def _similarity(
    state: ServerState, request: Request, inputs: dict[str, object], options: dict[str, object]
) -> list[float]:
    """sentence-similarity: cosine of source_sentence with each of sentences."""
    source, sentences = inputs.get("source_sentence"), inputs.get("sentences")
    if not isinstance(source, str) or not isinstance(sentences, list) or not sentences:
        raise APIError(
            422, "inputs needs source_sentence (a string) and sentences (a list)", param="inputs"
        )
    embed = _parse(EmbedRequest, {**_truncation(options), "inputs": [source, *sentences]})
    vectors = np.asarray(await serve_embed(state, request, embed), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1).clip(min=1e-12)
    unit = vectors / norms[:, None]
    return (unit[1:] @ unit[0]).tolist()


def _truncation(options: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in options.items() if k in ("truncate", "truncation_direction")}


def _parse(model: type[M], payload: dict[str, object]) -> M:
    # Through JSON, so that the strict rules are exactly the routes' own.
    try:
        return model.model_validate_json(json.dumps(payload))
    except ValidationError as exc:
        raise validation_error(exc.errors(), status=422) from None
