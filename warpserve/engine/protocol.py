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
from warpserve.scheduler.scheduler import SchedulerStats


class EngineOverloadedError(RuntimeError):
    """The waiting queue is full: the caller should answer 429 with Retry-After."""


class EngineDeadError(RuntimeError):
    """The engine loop has died or is stuck: the caller should answer 503."""


class RequestFailedError(RuntimeError):
    """The engine failed this one request (a fault while running it); it goes on serving
    the others. The caller should answer 500."""


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
class EngineStats(SchedulerStats):
    """The scheduler's counts (running, waiting, KV and prefix cache, preemptions) plus
    the speculative decoding totals since start. Acceptance rate = accepted / draft
    tokens; mean accepted length = accepted / drafts (draft tokens kept per proposal)."""

    spec_decode_method: str = "none"  # none | ngram | draft | layerskip | auto
    spec_decode_proposer: str = ""  # the proposer behind it: ngram | draft | layerskip
    spec_decode_num_drafts: int = 0  # proposals verified
    spec_decode_num_draft_tokens: int = 0  # tokens proposed and verified
    spec_decode_num_accepted_tokens: int = 0


@dataclass(frozen=True)
class EngineLiveness:
    is_alive: bool  # the loop is running (False while it restarts, or for good)
    num_restarts: int  # times a supervisor restarted a dead loop


class EngineClient(Protocol):
    model_name: str
    max_model_len: int
    vocab_size: int  # token ids in prompts, logit_bias and stop_token_ids are below it

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
        """Raise EngineDeadError unless the loop is alive and working: it stepped in the
        last few seconds, or a one-token probe finishes within timeout_s."""
        ...

    def liveness(self) -> EngineLiveness:
        """Cheap (no probe): for /ready and /metrics."""
        ...

    def stats(self) -> EngineStats: ...
