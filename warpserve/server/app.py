"""The FastAPI application: routes per endpoint family, middleware, error shapes.

`create_app` takes the engine and the embedding service ready-made (either may be None),
and never starts or stops them: whoever built them (`warpserve serve`, a test) owns them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response

import warpserve
from warpserve.engine.protocol import EngineClient
from warpserve.server import debug
from warpserve.server.config import ServerConfig
from warpserve.server.errors import install_error_handlers
from warpserve.server.generation import CLIENT_CLOSED_REQUEST, ClientDisconnected
from warpserve.server.hf import generate, inference, tei, tokenize
from warpserve.server.metrics import ServerMetrics
from warpserve.server.middleware import APIKeyMiddleware, BodySizeLimitMiddleware
from warpserve.server.openai import chat, completions, embeddings, models
from warpserve.server.ops import router as ops_router
from warpserve.server.state import EmbeddingBackend, ServerState

_ROUTERS = (
    completions.router,
    chat.router,
    embeddings.router,
    models.router,
    generate.router,
    tokenize.router,
    tei.router,
    inference.router,
    ops_router,
)


def create_app(
    engine: EngineClient | None,
    embedder: EmbeddingBackend | None,
    config: ServerConfig | None = None,
) -> FastAPI:
    config = config or ServerConfig()
    state = _make_state(engine, embedder, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lag_watch = asyncio.create_task(state.metrics.watch_event_loop_lag())
        yield
        lag_watch.cancel()
        state.is_draining = True  # uvicorn has drained the connections by now
        state.tokenizer_pool.shutdown(wait=False)

    app = FastAPI(
        title="warpserve",
        version=warpserve.__version__,
        description="OpenAI and Hugging Face (TGI, TEI) compatible inference server.",
        lifespan=lifespan,
    )
    app.state.warpserve = state
    for router in _ROUTERS:
        app.include_router(router)
    if config.enable_debug_faults:  # off by default: WARPSERVE_DEBUG_FAULTS=1
        app.include_router(debug.router)
    install_error_handlers(app)
    app.add_exception_handler(ClientDisconnected, _on_client_disconnected)  # type: ignore[arg-type]
    _add_middleware(app, config)
    return app


def _make_state(
    engine: EngineClient | None, embedder: EmbeddingBackend | None, config: ServerConfig
) -> ServerState:
    model_name = config.served_model_name or (engine.model_name if engine else "")
    metrics = ServerMetrics(engine, model_name)
    state = ServerState(engine=engine, embedder=embedder, config=config, metrics=metrics)
    metrics.in_flight.set_function(lambda: state.num_in_flight)
    return state


def _add_middleware(app: FastAPI, config: ServerConfig) -> None:
    # Added innermost first: CORS ends up outermost, so 401 and 413 answers carry its headers.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=config.max_request_bytes)
    if config.api_keys:
        app.add_middleware(APIKeyMiddleware, api_keys=config.api_keys)
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["*"],
            allow_credentials="*" not in config.cors_origins,
        )


async def _on_client_disconnected(request: Request, exc: ClientDisconnected) -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)
