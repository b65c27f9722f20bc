"""Operations: GET /health (a real one-token probe), /ready, /metrics, /info."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

import warpserve
from warpserve.engine.protocol import EngineDeadError
from warpserve.server.errors import unavailable
from warpserve.server.metrics import CONTENT_TYPE
from warpserve.server.state import get_state

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """200 when the engine is working (it stepped in the last few seconds, or a one-token
    probe finishes within the deadline) and the embedding service's workers run; 503
    otherwise."""
    state = get_state(request)
    if state.embedder is not None and not state.embedder.is_alive():
        raise unavailable("the embedding service is not running")
    if state.engine is not None:
        deadline = state.config.health_timeout_s
        try:
            # The outer timeout is a backstop for an engine that ignores its deadline.
            async with asyncio.timeout(deadline + 1.0):
                await state.engine.check_health(deadline)
        except (EngineDeadError, TimeoutError) as exc:
            raise unavailable(f"the engine is not healthy: {exc}") from None
    return JSONResponse({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    """200 while accepting requests; 503 once draining for shutdown, or while the engine
    loop is down (restarting, or dead for good). No probe: it is cheap to poll."""
    state = get_state(request)
    if state.is_draining:
        raise unavailable("the server is shutting down")
    if state.engine is not None and not state.engine.liveness().is_alive:
        raise unavailable("the engine loop is not running", state.config.retry_after_s)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE)


@router.get("/info")
async def info(request: Request) -> JSONResponse:
    """TGI's and TEI's /info, merged: what is loaded and its limits."""
    state = get_state(request)
    body: dict[str, object] = {"version": warpserve.__version__, "router": "warpserve"}
    if state.engine is not None:
        body |= {
            "model_id": state.model_name,
            "max_total_tokens": state.engine.max_model_len,
            "max_input_tokens": state.engine.max_model_len - 1,
            "max_concurrent_requests": state.config.max_concurrent_requests,
        }
    if state.embedder is not None:
        body |= {
            "embedding_model_id": state.embedding_model_name,
            "model_type": state.embedder.task,
        }
    return JSONResponse(body)
