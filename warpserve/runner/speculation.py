"""What the model runner needs of a speculative decoder, and the one it has without.

The runner is built with exactly one `Speculator` (runner/setup.py): spec_decode's, or
`NoSpeculation`, which proposes nothing. No draft is ever scheduled without a proposal, so
`NoSpeculation.verify` is never reached.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import torch

from warpserve.sampling.types import SampledToken, SamplingRow
from warpserve.scheduler.output import DraftCandidate, ScheduledSequence
from warpserve.spec_decode.types import SpecDecodeStats


class Speculator(Protocol):
    def propose(
        self, candidates: Sequence[DraftCandidate], generators: Mapping[str, torch.Generator]
    ) -> dict[str, list[int]]:
        """Draft tokens for the candidates' next step (only those that got some)."""
        ...

    def verify(
        self, seq: ScheduledSequence, logits: torch.Tensor, row: SamplingRow
    ) -> list[SampledToken]:
        """logits [k + 1, V]: the target at [last token, d1..dk] -> accepted + 1 tokens."""
        ...

    def observe_step(self, num_tokens: int, seconds: float) -> None:
        """A target step of num_tokens decode rows (plain or verifying) took seconds."""
        ...

    def reset(self, request_id: str) -> None:
        """Preempted: the request's K/V and drafts are gone."""
        ...

    def release(self, request_id: str) -> None:
        """Finished for good: drop everything kept for the request."""
        ...

    def stats(self) -> SpecDecodeStats: ...


class NoSpeculation:
    """Speculative decoding off: nothing proposed, nothing to verify or forget."""

    def propose(
        self, candidates: Sequence[DraftCandidate], generators: Mapping[str, torch.Generator]
    ) -> dict[str, list[int]]:
        return {}

    def verify(
        self, seq: ScheduledSequence, logits: torch.Tensor, row: SamplingRow
    ) -> list[SampledToken]:
        raise AssertionError(f"{seq.request_id} has drafts, but nothing proposed them")

    def observe_step(self, num_tokens: int, seconds: float) -> None:
        pass

    def reset(self, request_id: str) -> None:
        pass

    def release(self, request_id: str) -> None:
        pass

    def stats(self) -> SpecDecodeStats:
        return SpecDecodeStats()
