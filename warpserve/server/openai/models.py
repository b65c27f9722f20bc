"""GET /v1/models and /v1/models/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from warpserve.server.errors import APIError
from warpserve.server.state import get_state

router = APIRouter(tags=["openai"])


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    state = get_state(request)
    created = int(state.started_at)
    models = [
        {"id": name, "object": "model", "created": created, "owned_by": "warpserve"}
        for name in state.served_models()
    ]
    return JSONResponse({"object": "list", "data": models})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> JSONResponse:
    state = get_state(request)
    if model_id not in state.served_models():
        raise APIError(404, f"model '{model_id}' is not served here", code="model_not_found")
    return JSONResponse(
        {
            "id": model_id,
            "object": "model",
            "created": int(state.started_at),
            "owned_by": "warpserve",
        }
    )
