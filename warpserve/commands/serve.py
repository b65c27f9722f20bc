"""`warpserve serve`: the OpenAI / Hugging Face compatible HTTP server.

Builds the engine (its loop runs in its own thread) and the embedding service, hands them
to `create_app`, and runs uvicorn on the main thread's event loop. SIGTERM stops accepting
connections, lets in-flight requests finish (up to --drain-timeout), then closes both.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from warpserve.config import add_engine_arguments, engine_config_from_args
from warpserve.server.app import create_app
from warpserve.server.config import ServerConfig
from warpserve.weights.registry import DEFAULT_DECODER, DEFAULT_ENCODER

if TYPE_CHECKING:  # imported when used: each pulls in a model stack
    from warpserve.encoder.service import EmbeddingService
    from warpserve.engine.async_engine import AsyncLLM

logger = logging.getLogger(__name__)
_NONE = "none"
# ServerConfig's limits, each a flag of the same name (--max-input-tokens, ...).
_LIMITS: dict[str, type] = {
    "max_input_tokens": int,
    "max_total_tokens": int,
    "max_prompt_chars": int,
    "max_prompts_per_request": int,
    "max_sequences_per_request": int,
    "max_stop_strings": int,
    "max_stop_chars": int,
    "max_logit_bias": int,
    "max_chat_messages": int,
    "write_stall_timeout_s": float,
    "max_embedding_inputs": int,
    "max_rerank_texts": int,
    "max_input_chars": int,
    "max_rerank_query_chars": int,
    "max_tokenize_chars": int,
    "encoder_timeout_s": float,
    "retry_after_s": int,
}
# Connections uvicorn accepts beyond max_concurrent_requests (probes, scrapes, and
# requests that will be answered 429); past that uvicorn itself answers 503.
_CONNECTION_HEADROOM = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_DECODER, help=f"generative model, or '{_NONE}'")
    parser.add_argument(
        "--embedding-model", default=DEFAULT_ENCODER, help=f"embedding model, or '{_NONE}'"
    )
    parser.add_argument("--host", default=ServerConfig.host)
    parser.add_argument("--port", type=int, default=ServerConfig.port)
    parser.add_argument(
        "--api-key", action="append", default=[], help="accepted bearer key (repeatable)"
    )
    parser.add_argument(
        "--cors-origin", action="append", default=[], help="allowed origin, '*' for any"
    )
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--max-request-bytes", type=int, default=ServerConfig.max_request_bytes)
    parser.add_argument(
        "--max-concurrent-requests", type=int, default=ServerConfig.max_concurrent_requests
    )
    parser.add_argument("--request-timeout", type=float, default=ServerConfig.request_timeout_s)
    parser.add_argument("--health-timeout", type=float, default=ServerConfig.health_timeout_s)
    parser.add_argument("--drain-timeout", type=float, default=ServerConfig.drain_timeout_s)
    limits = parser.add_argument_group("input limits (docs/RELIABILITY.md)")
    for name, kind in _LIMITS.items():
        default = getattr(ServerConfig, name)
        limits.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=default,
            help=f"default: {'from the model' if default is None else default}",
        )
    add_engine_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="the engine's sampling seed")


def server_config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(args.api_key),
        cors_origins=tuple(args.cors_origin),
        max_request_bytes=args.max_request_bytes,
        max_concurrent_requests=args.max_concurrent_requests,
        request_timeout_s=args.request_timeout,
        health_timeout_s=args.health_timeout,
        drain_timeout_s=args.drain_timeout,
        served_model_name=args.served_model_name,
        **{name: getattr(args, name) for name in _LIMITS},
    )


def run(args: argparse.Namespace) -> int:
    config = server_config(args)
    engine = _load_engine(args)
    embedder = _load_embedder(args.embedding_model)
    if engine is None and embedder is None:
        raise ValueError("nothing to serve: give --model or --embedding-model")
    try:
        serve(create_app(engine, embedder, config), config)
    finally:
        _close(engine, embedder)
    return 0


def serve(app: FastAPI, config: ServerConfig) -> None:
    """Run uvicorn until SIGTERM / SIGINT, then drain in-flight requests."""
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        # uvicorn annotates this as int, but hands it to asyncio.wait_for, which takes float
        timeout_graceful_shutdown=config.drain_timeout_s,  # type: ignore[arg-type]
        limit_concurrency=config.max_concurrent_requests + _CONNECTION_HEADROOM,
        log_level="info",
    )
    server = _DrainingServer(uv_config, app)
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return
    # After draining, uvicorn re-raises the signal through the handler it found; make that
    # a clean exit, so the caller's `finally` still closes the engine.
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _load_engine(args: argparse.Namespace) -> AsyncLLM | None:
    if args.model.lower() == _NONE:
        return None
    from warpserve.engine.async_engine import AsyncLLM

    logger.info("loading %s", args.model)
    return AsyncLLM.from_config(engine_config_from_args(args, seed=args.seed))


def _load_embedder(name: str) -> EmbeddingService | None:
    if name.lower() == _NONE:
        return None
    from warpserve.encoder.service import EmbeddingService

    logger.info("loading %s", name)
    return EmbeddingService.from_name(name)


def _close(engine: AsyncLLM | None, embedder: EmbeddingService | None) -> None:
    if embedder is not None:
        embedder.close()
    if engine is not None:
        engine.shutdown()


class _DrainingServer(uvicorn.Server):
    """Marks the app as draining the moment a shutdown signal arrives, so /ready answers
    503 and new generation requests are refused while in-flight ones finish."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.warpserve.is_draining = True
        super().handle_exit(sig, frame)
