"""The speculative decoder the model runner drives: propose after a step, verify in the
next one, and count what was proposed and accepted.

Its life per request: `propose` (after the step that sampled the request's last token)
stores each proposal and returns the draft ids for the scheduler; the next step's target
forward computes logits at [last token, d1..dk]; `verify` turns those k + 1 rows into
the accepted drafts plus one token. `reset` on preemption, `release` when finished.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from warpserve.sampling.logprobs import compute_logprobs
from warpserve.sampling.types import SampledToken, SamplingRow
from warpserve.scheduler.output import DraftCandidate, ScheduledSequence
from warpserve.spec_decode.adaptive import DraftLengthPolicy
from warpserve.spec_decode.rejection import verify_greedy, verify_sampled
from warpserve.spec_decode.target_dist import target_argmax, target_probs, verify_rows
from warpserve.spec_decode.types import Proposal, Proposer, SpecDecodeStats


@dataclass
class SpecDecodeCounters:
    """Totals since start. Acceptance rate = accepted / draft tokens; mean accepted
    length = accepted / drafts (tokens gained per verified proposal)."""

    num_drafts: int = 0  # proposals verified
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0


class Speculator:
    def __init__(
        self,
        method: str,
        proposer: Proposer,
        policy: DraftLengthPolicy,
        eos_token_ids: frozenset[int],
    ) -> None:
        """method: SpeculativeConfig.method (auto runs the ngram proposer)."""
        self.method = method
        self.proposer = proposer
        self.policy = policy
        self.eos_token_ids = eos_token_ids
        self.counters = SpecDecodeCounters()
        self._proposals: dict[str, Proposal] = {}

    @property
    def name(self) -> str:
        return self.proposer.name

    def propose(
        self, candidates: Sequence[DraftCandidate], generators: Mapping[str, torch.Generator]
    ) -> dict[str, list[int]]:
        """Draft tokens for the candidates' next step (only those that got some)."""
        batch, draft_s = len(candidates), self.proposer.draft_cost_s
        num_drafts = {
            c.request_id: self.policy.num_drafts(
                c.request_id, c.max_num_draft_tokens, batch, draft_s
            )
            for c in candidates
        }
        proposals = self.proposer.propose(candidates, num_drafts, generators)
        self._proposals.update(proposals)
        return {rid: p.token_ids for rid, p in proposals.items()}

    def verify(
        self, seq: ScheduledSequence, logits: torch.Tensor, row: SamplingRow
    ) -> list[SampledToken]:
        """logits [k + 1, V]: the target at [last token, d1..dk] -> accepted + 1 tokens."""
        draft_ids = seq.draft_token_ids
        proposal = self._proposals.pop(seq.request_id)
        assert proposal.token_ids[: len(draft_ids)] == draft_ids, "verifying unknown drafts"
        rows = verify_rows(row, draft_ids)
        if row.params.is_greedy:
            token_ids = verify_greedy(target_argmax(logits, rows, self.eos_token_ids), draft_ids)
        else:
            probs = target_probs(logits, rows, self.eos_token_ids)
            draft_probs = None if proposal.probs is None else proposal.probs[: len(draft_ids)]
            token_ids = verify_sampled(probs, draft_ids, draft_probs, row.generator)
        self._count(seq.request_id, len(draft_ids), len(token_ids) - 1)
        return _sampled_tokens(logits, token_ids, row.params.logprobs)

    def stats(self) -> SpecDecodeStats:
        counters = self.counters
        return SpecDecodeStats(
            method=self.method,
            proposer=self.proposer.name,
            num_drafts=counters.num_drafts,
            num_draft_tokens=counters.num_draft_tokens,
            num_accepted_tokens=counters.num_accepted_tokens,
        )

    def observe_step(self, num_tokens: int, seconds: float) -> None:
        """A target step of num_tokens decode rows (plain or verifying) took seconds."""
        self.policy.step_cost.observe(num_tokens, seconds)

    def reset(self, request_id: str) -> None:
        """Preempted: its K/V and drafts are gone; its acceptance history stays."""
        self._proposals.pop(request_id, None)
        self.proposer.reset(request_id)

    def release(self, request_id: str) -> None:
        self._proposals.pop(request_id, None)
        self.proposer.release(request_id)
        self.policy.release(request_id)

    def _count(self, request_id: str, num_drafts: int, num_accepted: int) -> None:
        self.counters.num_drafts += 1
        self.counters.num_draft_tokens += num_drafts
        self.counters.num_accepted_tokens += num_accepted
        self.policy.observe(request_id, num_drafts, num_accepted)


def _sampled_tokens(
    logits: torch.Tensor, token_ids: list[int], num_logprobs: int | None
) -> list[SampledToken]:
    """Logprobs, when asked, come from the raw logits at each token's own position."""
    if num_logprobs is None:
        return [SampledToken(t, None, None) for t in token_ids]
    chosen = torch.tensor(token_ids, dtype=torch.long)
    computed = compute_logprobs(
        logits[: len(token_ids)].float(), chosen, [num_logprobs] * len(token_ids)
    )
    return [SampledToken(t, lp, top) for t, (lp, top) in zip(token_ids, computed, strict=True)]
