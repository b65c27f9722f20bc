"""The boundary between proposers, the verifier and the model runner."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from warpserve.scheduler.output import DraftCandidate


@dataclass(frozen=True)
class Proposal:
    """The draft tokens for one request's next step."""

    token_ids: list[int]
    # [k, V]: the distribution each draft token was drawn from. None when the proposal
    # is deterministic (n-gram lookup, a greedy draft), i.e. one-hot at each token.
    probs: torch.Tensor | None = None


class Proposer(Protocol):
    """Proposes up to num_drafts[request_id] tokens for each candidate."""

    name: str
    draft_cost_s: float  # seconds to draft one token for one request, as measured so far

    def propose(
        self,
        candidates: Sequence[DraftCandidate],
        num_drafts: Mapping[str, int],
        generators: Mapping[str, torch.Generator],
    ) -> dict[str, Proposal]: ...

    def reset(self, request_id: str) -> None:
        """The request's K/V were freed (preemption): forget what was computed for it."""
        ...

    def release(self, request_id: str) -> None:
        """The request is finished for good: drop all its state."""
        ...


@dataclass(frozen=True)
class SpecDecodeStats:
    """Totals since start. Acceptance rate = accepted / draft tokens; mean accepted
    length = accepted / drafts (tokens gained per verified proposal)."""

    method: str = "none"  # none | ngram | draft | layerskip | auto
    proposer: str = ""  # the proposer behind it: ngram | draft | layerskip
    num_drafts: int = 0  # proposals verified
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
