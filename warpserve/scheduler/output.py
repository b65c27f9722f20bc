"""The scheduler's decision for one step: all the model runner sees of the scheduler.

Pure Python. One step runs every scheduled sequence's tokens in one forward pass, prefill
chunks and decode tokens mixed ("no prefill phase, no decode phase").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from warpserve.request import SamplingParams


@dataclass(frozen=True)
class ScheduledSequence:
    request_id: str
    token_ids: list[int]  # the tokens to run this step: a prefill chunk or the last sampled one
    num_computed_tokens: int  # tokens already in the KV cache: the position of token_ids[0]
    block_ids: list[int]  # the whole block table, covering num_computed_tokens + len(token_ids)
    do_sample: bool  # this step reaches the end of the known tokens: sample the next one
    sampling_params: SamplingParams
    prompt_token_ids: Sequence[int]  # read-only views for penalties; owned by the scheduler
    output_token_ids: Sequence[int]
    seed: int | None = None  # per-sequence seed (n > 1 children get seed + index)


@dataclass(frozen=True)
class SchedulerOutput:
    sequences: list[ScheduledSequence]
    num_batched_tokens: int
    # Requests that left the running set since the last step (finished, aborted or
    # preempted): the runner drops any per-request state it keeps for them.
    freed_request_ids: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.sequences
