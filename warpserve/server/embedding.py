"""The serving core of the encoder routes (OpenAI embeddings, TEI, the Inference API).

Every encoder call is admitted (a concurrency ticket, taken before tokenizing), bounded by
`ServerConfig.encoder_timeout_s` (504; the service then skips the request's queued texts,
as it does for a client that has gone), and its failures are mapped to statuses here: the
caller's fault is a 4xx naming the field, the service's a 503 the next request survives.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
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
from warpserve.server.generation import ClientDisconnected, cancel_on_disconnect
from warpserve.server.state import EmbeddingBackend, ServerState

logger = logging.getLogger(__name__)
T = TypeVar("T")


def too_large(request: Request, message: str, param: str) -> APIError:
    """A size limit's refusal: 413 on the Hugging Face routes (TEI answers its validation
    errors so), 400 on OpenAI's."""
    status = 413 if is_hf_path(request.url.path) else 400
    return APIError(status, message, param=param)


def check_inputs(
    state: ServerState,
    request: Request,
    texts: list[str],
    param: str,
    is_batch: bool = True,
    max_texts: int | None = None,
) -> None:
    """The request's texts against the count and size limits, before any tokenizing;
    `max_texts` defaults to `max_embedding_inputs`."""
    if not texts:
        raise bad_request(f"{param} must not be empty", param=param)
    limit = max_texts or state.config.max_embedding_inputs
    if len(texts) > limit:
        message = f"{param} holds {len(texts)} texts, more than the limit of {limit}"
        raise too_large(request, message, param)
    max_chars = state.config.max_input_chars
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            name = f"{param}[{index}]" if is_batch else param
            message = f"{name} has {len(text)} characters, more than the limit of {max_chars}"
            raise too_large(request, message, param)


@contextmanager
def admitted(state: ServerState) -> Iterator[None]:
    """Hold a concurrency ticket (429 when full, 503 while draining) around one call."""
    ticket = state.admit()
    try:
        yield
    finally:
        ticket.release()


async def call_encoder(
    state: ServerState,
    request: Request,
    work: Awaitable[T],
    param: str = "inputs",
    is_batch: bool = True,
) -> T:
    """Await one encoder call under the deadline, mapping its exceptions to HTTP statuses;
    `param` names the request's texts (and `is_batch` whether it is a list) in a too-long
    error."""
    timeout_s = state.config.encoder_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            return await cancel_on_disconnect(request, work)
    except ClientDisconnected:
        raise
    except TimeoutError:
        state.metrics.rejected("encoder_timeout")
        message = f"the encoder did not answer within {timeout_s:g} s"
        raise APIError(504, message, code="timeout") from None
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
    except Exception as exc:  # noqa: BLE001 - the service failed on valid input
        logger.exception("encoder call failed", exc_info=exc)
        state.metrics.rejected("encoder_error")
        raise unavailable(f"the embedding service failed on this request: {exc}") from None


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
    with admitted(state):
        work = embedder.embed(texts, normalize=normalize, truncate=truncate)
        vectors, num_tokens = await call_encoder(state, request, work, param, is_batch)
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1), int(num_tokens)


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, as OpenAI's client decodes it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
