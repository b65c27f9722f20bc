"""Requests as the engine sees them: sampling parameters, status and finish reasons.

Pure Python (no torch): the scheduler and the KV cache manager import this module.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from warpserve.structured.spec import StructuredSpec


class FinishReason(str, enum.Enum):  # noqa: UP042 (str() stays 'FinishReason.STOP')
    STOP = "stop"  # EOS, a stop token id or a stop string
    LENGTH = "length"  # max_tokens or the model's context
    ABORT = "abort"  # the client went away, a timeout, or an explicit abort


class RequestStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    PREEMPTED = enum.auto()  # blocks freed; will recompute its tokens when rescheduled
    FINISHED = enum.auto()


# Temperatures below this are greedy (vLLM's _MAX_TEMP rule): logits / 1e-50 are inf.
GREEDY_BELOW_TEMPERATURE = 1e-5
# The repetition penalty divides logits: below this a float32 logit overflows to inf.
MIN_REPETITION_PENALTY = 0.01


@dataclass
class SamplingParams:
    """What a user may ask of one generation; validated on construction.

    `temperature == 0` means greedy. `top_k is None` and `top_p == 1` and `min_p == 0`
    disable those filters. Penalties follow OpenAI (presence/frequency, additive) and
    Transformers (repetition, multiplicative).
    """

    n: int = 1
    max_tokens: int = 16
    min_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    logprobs: int | None = None  # number of top alternatives to return per token
    skip_special_tokens: bool = True
    # A compiled grammar the output must follow (JSON schema, regex, tool calls); None: free.
    structured: StructuredSpec | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if 0.0 <= self.temperature < GREEDY_BELOW_TEMPERATURE:
            self.temperature = 0.0  # vLLM's rule: dividing by ~0 only overflows to inf/NaN
        _check(self.n >= 1 and self.n <= 16, "n", "must be between 1 and 16")
        _check(self.max_tokens >= 1, "max_tokens", "must be at least 1")
        _check(self.min_tokens >= 0, "min_tokens", "must be >= 0")
        _check(self.min_tokens <= self.max_tokens, "min_tokens", "must be <= max_tokens")
        _check(0.0 <= self.temperature <= 100.0, "temperature", "must be in [0, 100]")
        _check(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        _check(self.top_k is None or self.top_k >= 1, "top_k", "must be >= 1 or None")
        _check(0.0 <= self.min_p <= 1.0, "min_p", "must be in [0, 1]")
        _check(
            MIN_REPETITION_PENALTY <= self.repetition_penalty <= 10.0,
            "repetition_penalty",
            f"must be in [{MIN_REPETITION_PENALTY}, 10]",
        )
        _check(-2.0 <= self.presence_penalty <= 2.0, "presence_penalty", "must be in [-2, 2]")
        _check(-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty", "must be in [-2, 2]")
        for token_id, bias in self.logit_bias.items():
            _check(int(token_id) >= 0, "logit_bias", "token ids must be >= 0")
            _check(-100.0 <= bias <= 100.0, "logit_bias", "values must be in [-100, 100]")
        _check(len(self.stop) <= 16, "stop", "at most 16 stop strings")
        _check(all(s for s in self.stop), "stop", "stop strings must be non-empty")
        _check(all(t >= 0 for t in self.stop_token_ids), "stop_token_ids", "must be >= 0")
        _check(self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs", "must be in [0, 20]")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{name} {message}")


@dataclass
class RequestTimings:
    """Wall-clock timestamps (time.perf_counter) of one request's life."""

    arrival: float = field(default_factory=time.perf_counter)
    first_scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None


@dataclass(eq=False)
class Request:
    """The engine-internal state of one sequence, owned and mutated by the scheduler.

    A request with `SamplingParams.n > 1` becomes n Requests (ids f"{id}-{i}", seeds
    seed + i) that share their prompt's KV blocks through the prefix cache.

    Known tokens are the prompt followed by the outputs sampled so far; the last sampled
    token is never in the KV cache until the next step feeds it, so a running request has
    `num_computed_tokens < num_tokens`. After a preemption `num_computed_tokens` drops to 0
    and the outputs are recomputed with the prompt.
    """

    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_ids: Collection[int] = frozenset()  # the tokenizer's; ignored with ignore_eos
    seed: int | None = None
    timings: RequestTimings = field(default_factory=RequestTimings)
    status: RequestStatus = RequestStatus.WAITING
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # known tokens whose K/V are in the cache
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache at first schedule
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None  # the stop token id or stop string that ended it
    # sampling_params.max_tokens, lowered by the scheduler so that the sequence fits the
    # model's context.
    max_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.max_tokens = self.sampling_params.max_tokens
        # Kept alongside the two lists so that slicing the known tokens costs no concat.
        self._all_token_ids = [*self.prompt_token_ids, *self.output_token_ids]

    @property
    def arrival_time(self) -> float:
        return self.timings.arrival

    @property
    def all_token_ids(self) -> list[int]:
        """Prompt then outputs. Read-only: append through append_output_token_ids."""
        return self._all_token_ids

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self._all_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status is RequestStatus.FINISHED

    def append_output_token_ids(self, token_ids: list[int]) -> None:
        self.output_token_ids.extend(token_ids)
        self._all_token_ids.extend(token_ids)

    def truncate_output(self, num_output_tokens: int) -> None:
        """Keep the first num_output_tokens outputs (a stop string ended it there)."""
        del self.output_token_ids[num_output_tokens:]
        del self._all_token_ids[self.num_prompt_tokens + num_output_tokens :]
