"""How many tokens to draft for each request, from its acceptance rate and the cost of a
step. Pure Python.

The j-th draft of a request is used only if drafts 1..j are all accepted: with a per-token
acceptance rate a, it yields a**j tokens on average. It costs one more token in the
verify pass (per_token_s) plus drafting it (draft_s). A step of B tokens makes B tokens
in fixed_s + per_token_s * B seconds, so the j-th draft raises throughput when
    a**j / (per_token_s + draft_s) > B / (fixed_s + per_token_s * B)
i.e. when a**j exceeds the threshold (per_token_s + draft_s) * B / (fixed_s + per_token_s * B).
On a CPU, a single stream is bound by reading the weights (fixed_s >> per_token_s): the
threshold is small and long drafts pay; a large batch is compute-bound: the threshold
approaches 1 and drafting stops.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepCost:
    """Measured at start-up: one target step of T tokens takes fixed_s + per_token_s * T."""

    fixed_s: float
    per_token_s: float

    def draft_threshold(self, batch_num_tokens: int, draft_s: float) -> float:
        """The acceptance probability a draft must beat to pay for itself."""
        step_s = self.fixed_s + self.per_token_s * batch_num_tokens
        return (self.per_token_s + draft_s) * batch_num_tokens / step_s


class Acceptance:
    """One request's draft acceptance rate: decayed counts, pulled towards a prior."""

    PRIOR_RATE = 0.6
    PRIOR_WEIGHT = 2.0  # in draft tokens
    DECAY = 0.8  # per verify step: recent steps count most

    def __init__(self) -> None:
        self.num_accepted = 0.0
        self.num_tried = 0.0

    def observe(self, num_drafts: int, num_accepted: int) -> None:
        # Drafts are judged in order up to the first rejection: num_accepted successes,
        # and one failure unless all were accepted. Later drafts were never tried.
        num_tried = num_accepted + (1 if num_accepted < num_drafts else 0)
        self.num_accepted = self.DECAY * self.num_accepted + num_accepted
        self.num_tried = self.DECAY * self.num_tried + num_tried

    @property
    def rate(self) -> float:
        prior = self.PRIOR_RATE * self.PRIOR_WEIGHT
        return (self.num_accepted + prior) / (self.num_tried + self.PRIOR_WEIGHT)


class DraftLengthPolicy:
    """Per-request number of drafts. can_skip (method "auto"): 0 when drafting does not
    pay, with a one-token probe every PROBE_INTERVAL steps so that a request whose text
    turns predictable is noticed."""

    PROBE_INTERVAL = 16

    def __init__(
        self, max_num_drafts: int, adaptive: bool, can_skip: bool, step_cost: StepCost
    ) -> None:
        self.max_num_drafts = max_num_drafts
        self.adaptive = adaptive
        self.can_skip = can_skip
        self.step_cost = step_cost
        self._acceptance: dict[str, Acceptance] = {}
        self._num_skipped: dict[str, int] = {}

    def num_drafts(
        self, request_id: str, max_allowed: int, batch_num_tokens: int, draft_s: float
    ) -> int:
        limit = min(self.max_num_drafts, max_allowed)
        if not self.adaptive or limit <= 0:
            return max(limit, 0)
        rate = self.acceptance_rate(request_id)
        threshold = self.step_cost.draft_threshold(batch_num_tokens, draft_s)
        num = 0
        while num < limit and rate ** (num + 1) > threshold:
            num += 1
        if num > 0 or not self.can_skip:
            self._num_skipped.pop(request_id, None)
            return max(num, 1)
        skipped = self._num_skipped.get(request_id, 0) + 1
        self._num_skipped[request_id] = skipped
        return 1 if skipped % self.PROBE_INTERVAL == 0 else 0

    def observe(self, request_id: str, num_drafts: int, num_accepted: int) -> None:
        self._acceptance.setdefault(request_id, Acceptance()).observe(num_drafts, num_accepted)

    def acceptance_rate(self, request_id: str) -> float:
        acceptance = self._acceptance.get(request_id)
        return Acceptance.PRIOR_RATE if acceptance is None else acceptance.rate

    def release(self, request_id: str) -> None:
        self._acceptance.pop(request_id, None)
        self._num_skipped.pop(request_id, None)
