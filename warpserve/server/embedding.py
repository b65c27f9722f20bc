"""The serving core of the encoder routes (OpenAI embeddings, TEI, the Inference API)."""

from __future__ import annotations

import base64
from collections.abc import Awaitable
from typing import TypeVar

import numpy as np
from fastapi import Request

from warpserve.engine.protocol import EngineDeadError, EngineOverloadedError, InputTooLongError
from warpserve.server.errors import (
    APIError,
    bad_request,
    from_value_error,
    is_hf_path,
    overloaded,
    unavailable,
)
from warpserve.server.generation import cancel_on_disconnect
from warpserve.server.state import EmbeddingBackend, ServerState

T = TypeVar("T")


def check_inputs(state: ServerState, texts: list[str], param: str) -> None:
    if not texts:
        raise bad_request(f"{param} must not be empty", param=param)
    if len(texts) > state.config.max_embedding_inputs:
        limit = state.config.max_embedding_inputs
        raise bad_request(f"{param} holds more than {limit} texts", param=param)


async def call_encoder(
    state: ServerState,
    request: Request,
    work: Awaitable[T],
    param: str = "inputs",
    is_batch: bool = True,
) -> T:
    """Await one encoder call, mapping its exceptions to HTTP statuses; `param` names the
    request's texts (and `is_batch` whether it is a list) in a too-long error."""
    try:
        return await cancel_on_disconnect(request, work)
    except InputTooLongError as exc:
        name = f"{param}[{exc.index}]" if is_batch else param
        raise input_too_long(request, exc, name) from None
    except ValueError as exc:
        raise from_value_error(exc) from None
    except EngineOverloadedError:
        state.metrics.rejected("encoder_full")
        raise overloaded(state.config.retry_after_s) from None
    except EngineDeadError as exc:
        raise unavailable(f"the embedding service is not running: {exc}") from None


def input_too_long(request: Request, exc: InputTooLongError, name: str) -> APIError:
    """The truncation rule's refusal, in the route's words: TEI's routes take `truncate`
    and answer 413 (as TEI does); OpenAI's take no such field and answer 400."""
    limit = f"{name} has {exc.num_tokens} tokens, more than the model's limit of"
    param = name.split("[", 1)[0]
    if is_hf_path(request.url.path):
        message = f"{limit} {exc.max_input_tokens}; pass truncate=true to cut it to the limit"
        return APIError(413, message, param=param)
    message = f"{limit} {exc.max_input_tokens}; shorten it"
    return bad_request(message, param=param, code="context_length_exceeded")


async def embed(
    state: ServerState,
    request: Request,
    embedder: EmbeddingBackend,
    texts: list[str],
    normalize: bool,
    truncate: bool,
    param: str,
    is_batch: bool,
) -> tuple[np.ndarray, int]:
    """[num_texts, dim] float32 vectors and the number of tokens they took."""
    work = embedder.embed(texts, normalize=normalize, truncate=truncate)
    vectors, num_tokens = await call_encoder(state, request, work, param, is_batch)
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1), int(num_tokens)


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, as OpenAI's client decodes it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
