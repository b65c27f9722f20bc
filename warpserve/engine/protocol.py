"""What the HTTP server needs from an engine: the boundary between `server/` and `engine/`.

The real implementation is `warpserve.engine.async_engine.AsyncLLM` (the engine loop in
its own thread, fed through a queue). Everything here sees native Python types only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from warpserve.outputs import RequestOutput
from warpserve.request import SamplingParams


class EngineOverloadedError(RuntimeError):
    """The waiting queue is full: the caller should answer 429 with Retry-After."""


class EngineDeadError(RuntimeError):
    """The engine loop has died or is stuck: the caller should answer 503."""


class InputTooLongError(ValueError):
    """An encoder input is longer than the model's limit and truncation is off.

    `index` is the input's position in the caller's list, so each route can name the
    field in its own words (OpenAI's `input`, TEI's `inputs`) and its own remedy.
    """

    def __init__(self, num_tokens: int, max_input_tokens: int, index: int = 0) -> None:
        super().__init__(
            f"input {index} has {num_tokens} tokens, the model's limit is "
            f"{max_input_tokens}; pass truncate=true"
        )
        self.num_tokens = num_tokens
        self.max_input_tokens = max_input_tokens
        self.index = index


@dataclass(frozen=True)
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # fraction of KV blocks in use, 0..1
    prefix_cache_queries: int  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int  # of which found
    num_preemptions: int
    num_free_blocks: int
    num_total_blocks: int
    # Speculative decoding, totals since start. Acceptance rate = accepted / draft tokens;
    # mean accepted length = accepted / drafts (draft tokens kept per verified proposal).
    spec_decode_method: str = "none"  # none | ngram | draft | layerskip | auto
    spec_decode_proposer: str = ""  # the proposer behind it: ngram | draft | layerskip
    spec_decode_num_drafts: int = 0  # proposals verified
    spec_decode_num_draft_tokens: int = 0  # tokens proposed and verified
    spec_decode_num_accepted_tokens: int = 0


class EngineClient(Protocol):
    model_name: str
    max_model_len: int

    def generate(
        self, prompt: str | list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        """Yield cumulative RequestOutputs until the last, which has finished=True.

        Raises ValueError for bad input (prompt too long, empty prompt) before yielding,
        EngineOverloadedError when the waiting queue is full. Closing the iterator early
        (the client went away) aborts the request and frees its KV blocks.
        """
        ...

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self, timeout_s: float) -> None:
        """Run a real one-token generation; raise EngineDeadError if it fails or is late."""
        ...

    def stats(self) -> EngineStats: ...
