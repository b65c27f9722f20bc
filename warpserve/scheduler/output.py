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
    # The tokens to run this step: a prefill chunk, the last sampled one, or (speculative
    # decoding) the last sampled one followed by draft_token_ids.
    token_ids: list[int]
    num_computed_tokens: int  # tokens already in the KV cache: the position of token_ids[0]
    block_ids: list[int]  # the whole block table, covering num_computed_tokens + len(token_ids)
    do_sample: bool  # this step reaches the end of the known tokens: sample the next one
    sampling_params: SamplingParams
    prompt_token_ids: Sequence[int]  # read-only views for penalties; owned by the scheduler
    output_token_ids: Sequence[int]
    seed: int | None = None  # per-sequence seed (n > 1 children get seed + index)
    # Proposed tokens to verify: the tail of token_ids. The runner needs logits at every
    # one of them and returns the accepted drafts plus one token of the target's.
    draft_token_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class DraftCandidate:
    """A decoding request that may get draft tokens for its next step."""

    request_id: str
    token_ids: Sequence[int]  # the known tokens (read-only view); the last is not yet computed
    block_ids: list[int]  # the block table, with room for max_num_draft_tokens lookahead slots
    max_num_draft_tokens: int  # capped by max_tokens and by the slots the table holds
    sampling_params: SamplingParams
    seed: int | None = None


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
