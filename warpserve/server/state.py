"""What every route can reach: the injected engine and embedding service, config, metrics.

The engine and the embedding service are injected (`create_app`), so tests run the whole
HTTP layer over a fake engine in milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request

from warpserve.engine.protocol import EngineClient
from warpserve.server.config import ServerConfig
from warpserve.server.errors import APIError, overloaded, unavailable, unknown_model
from warpserve.server.metrics import ServerMetrics


class Tokenizer(Protocol):
    """The part of `warpserve.tokenization.Tokenizer` the server uses."""

    eos_token_ids: Sequence[int] | frozenset[int]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str: ...

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """kwargs go to the template (`tools`, or `chat_template` to replace it)."""
        ...


class EmbeddingBackend(Protocol):
    """The part of `warpserve.encoder.service.EmbeddingService` the server uses."""

    model_name: str
    task: str  # "embed" | "rerank" | "classify"

    async def embed(
        self, texts: list[str], *, normalize: bool, truncate: bool
    ) -> tuple[list[list[float]], int]: ...

    async def rerank(self, query: str, texts: list[str], *, truncate: bool) -> list[float]: ...

    async def classify(
        self, texts: list[str], *, truncate: bool
    ) -> list[list[tuple[str, float]]]: ...

    def is_alive(self) -> bool:
        """Cheap (no forward pass): its workers run and it is open."""
        ...

    def close(self) -> None: ...


@dataclass
class ServerState:
    engine: EngineClient | None
    embedder: EmbeddingBackend | None
    config: ServerConfig
    metrics: ServerMetrics
    is_draining: bool = False
    num_in_flight: int = 0
    started_at: float = field(default_factory=time.time)
    # One thread: long prompts are tokenized off the event loop, one at a time.
    tokenizer_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="warpserve-tokenize")
    )

    @property
    def model_name(self) -> str | None:
        if self.engine is None:
            return None
        return self.config.served_model_name or self.engine.model_name

    @property
    def embedding_model_name(self) -> str | None:
        if self.embedder is None:
            return None
        return self.config.served_embedding_model_name or self.embedder.model_name

    def served_models(self) -> list[str]:
        names = [self.model_name, self.embedding_model_name]
        return [name for name in names if name is not None]

    def require_engine(self, model: str | None) -> EngineClient:
        if self.engine is None:
            raise APIError(404, "no generative model is loaded", param="model")
        if model is not None and model != self.model_name:
            raise unknown_model(model, self.served_models())
        return self.engine

    def require_embedder(self, model: str | None, task: str = "embed") -> EmbeddingBackend:
        if self.embedder is None or self.embedder.task != task:
            raise APIError(404, f"no {task} model is loaded", param="model")
        if model is not None and model != self.embedding_model_name:
            raise unknown_model(model, self.served_models())
        return self.embedder

    def tokenizer(self) -> Tokenizer:
        engine = self.require_engine(None)
        return engine.tokenizer  # type: ignore[attr-defined]

    def admit(self) -> Ticket:
        """A slot for one generation request; raises 503 while draining, 429 when full."""
        if self.is_draining:
            raise unavailable("the server is shutting down")
        if self.num_in_flight >= self.config.max_concurrent_requests:
            self.metrics.rejected("server_full")
            raise overloaded(self.config.retry_after_s)
        self.num_in_flight += 1
        return Ticket(self)


class Ticket:
    """One admitted request's slot. The route that took it releases it, unless it handed
    it to the StreamGroup that then serves the request (and releases it when closed)."""

    def __init__(self, state: ServerState) -> None:
        self._state: ServerState | None = state
        self.is_handed_over = False

    def release(self) -> None:
        if self._state is not None:
            self._state.num_in_flight -= 1
            self._state = None

    def release_unless_owned(self) -> None:
        if not self.is_handed_over:
            self.release()


def get_state(request: Request) -> ServerState:
    return request.app.state.warpserve
