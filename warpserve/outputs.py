"""What the engine hands back to its callers (the offline LLM facade, the HTTP server)."""

from __future__ import annotations

from dataclasses import dataclass, field

from warpserve.request import FinishReason


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    token: str
    logprob: float
    top_logprobs: list[tuple[int, str, float]]  # (token id, token text, logprob), best first


@dataclass
class CompletionOutput:
    index: int  # which of the request's n choices
    text: str  # cumulative detokenized text (stop strings already cut)
    token_ids: list[int]  # cumulative generated token ids
    logprobs: list[TokenLogprob] | None = None  # cumulative, when requested
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop string or token id that ended it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    """Seconds, measured with time.perf_counter."""

    arrival_time: float
    queue_time: float | None = None  # arrival -> first scheduled
    time_to_first_token: float | None = None  # arrival -> first generated token
    prefill_time: float | None = None  # first scheduled -> first token
    decode_time: float | None = None  # first token -> finish
    finished_time: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
    prompt: str | None = None
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    extra: dict[str, object] = field(default_factory=dict)
