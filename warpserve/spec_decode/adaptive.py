"""How many tokens to draft for each request, from its acceptance rate and the cost of a
step. Pure Python.

With a per-token acceptance rate a, k drafts yield E(a, k) = (1 - a**(k + 1)) / (1 - a)
tokens per step instead of 1 (drafts are used up to the first rejection, plus the
target's own token). They cost a bigger step: B requests decoding make B tokens in
t(B); if each also verifies k drafts, the step takes t(B * (1 + k)) plus drafting. The
policy picks the k with the best E(a, k) * t(B) / (t(B * (1 + k)) + drafting) and drafts
only if that beats 1 (method "auto"; the explicit methods draft at least one).

t is measured, not modelled: on a CPU it is far from linear. One token runs a
matrix-vector product per weight; two run a small GEMM that may take twice as long,
while sixteen take only about three times one. So a single draft rarely pays and a long
one often does; and since t flattens with more tokens, a batch of 8 verifies drafts
more cheaply per token than a single stream, until the batch is large enough for the
GEMMs to be compute-bound. The start-up curve is then corrected by the steps the
engine actually runs (`ObservedStepCost`): the per-step work outside the forward, and
attention over long contexts, which the start-up measurement cannot see.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class StepCost:
    """Seconds of one target step at a few token counts (increasing), measured at start-up;
    linear in between and beyond the last point, constant below the first."""

    num_tokens: tuple[int, ...]
    seconds: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.num_tokens) < 2 or len(self.num_tokens) != len(self.seconds):
            raise ValueError("StepCost needs at least two (num_tokens, seconds) points")
        if list(self.num_tokens) != sorted(set(self.num_tokens)):
            raise ValueError("StepCost num_tokens must be increasing")

    @classmethod
    def linear(cls, fixed_s: float, per_token_s: float) -> StepCost:
        return cls((1, 2), (fixed_s + per_token_s, fixed_s + 2 * per_token_s))

    def seconds_for(self, num_tokens: float) -> float:
        points, seconds = self.num_tokens, self.seconds
        if num_tokens <= points[0]:
            return seconds[0]
        index = min(bisect.bisect_left(points, num_tokens), len(points) - 1)
        slope = (seconds[index] - seconds[index - 1]) / (points[index] - points[index - 1])
        return seconds[index - 1] + slope * (num_tokens - points[index - 1])


class ObservedStepCost:
    """The start-up StepCost plus a correction fitted to the steps the engine runs:
    observed - predicted = a + b * rows, by exponentially weighted least squares with a
    ridge on b (b >= 0). a is what a running step pays that the start-up measurement
    did not (scheduling, sampling, verification, Python); b is what each row pays extra
    (attention over contexts longer than the start-up one). Both are shared by every
    step size, so a size that has not been run lately is still predicted from the
    current observations: a per-size correction locked in one slow outlier at a size the
    policy then stopped choosing. Observations are clipped to [0.5, 3] x the prior."""

    DECAY = 0.9  # per observed step
    RIDGE_ROWS2 = 4.0  # rows^2: b stays near 0 until the observed sizes vary by a few rows

    def __init__(self, prior: StepCost) -> None:
        self.prior = prior
        # Decayed sums of weight, rows, rows^2, residual, rows * residual.
        self._sums = [0.0] * 5

    def observe(self, num_tokens: int, seconds: float) -> None:
        predicted = self.prior.seconds_for(num_tokens)
        residual = min(max(seconds - predicted, -0.5 * predicted), 2.0 * predicted)
        terms = (1.0, num_tokens, num_tokens * num_tokens, residual, num_tokens * residual)
        self._sums = [self.DECAY * s + t for s, t in zip(self._sums, terms, strict=True)]

    def correction(self) -> tuple[float, float]:
        """(a seconds per step, b seconds per row)."""
        weight, rows, rows2, residual, rows_residual = self._sums
        if weight <= 0.0:
            return 0.0, 0.0
        mean_rows, mean_residual = rows / weight, residual / weight
        variance = max(rows2 / weight - mean_rows * mean_rows, 0.0)
        covariance = rows_residual / weight - mean_rows * mean_residual
        per_row = max(covariance / (variance + self.RIDGE_ROWS2), 0.0)
        return mean_residual - per_row * mean_rows, per_row

    def seconds_for(self, num_tokens: float) -> float:
        predicted = self.prior.seconds_for(num_tokens)
        per_step, per_row = self.correction()
        return max(predicted + per_step + per_row * num_tokens, 0.5 * predicted)


def expected_tokens(rate: float, num_drafts: int) -> float:
    """Tokens a step yields with num_drafts drafts, each accepted with probability rate."""
    if rate >= 1.0:
        return num_drafts + 1.0
    return (1.0 - rate ** (num_drafts + 1)) / (1.0 - rate)


class Acceptance:
    """One request's draft acceptance rate: decayed counts, pulled towards a prior."""

    PRIOR_WEIGHT = 4.0  # in draft tokens: one early miss must not end drafting
    DECAY = 0.8  # per verify step: recent steps count most

    def __init__(self, prior_rate: float) -> None:
        self.prior_rate = prior_rate
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
        prior = self.prior_rate * self.PRIOR_WEIGHT
        return (self.num_accepted + prior) / (self.num_tried + self.PRIOR_WEIGHT)


class DraftLengthPolicy:
    """Per-request number of drafts. can_skip (method "auto"): 0 when drafting does not
    pay; every PROBE_INTERVAL-th skipped step it plans as if the request were new (the
    prior rate), so that a request whose text turns predictable is noticed."""

    # Optimistic: prompt lookup proposes only where the text repeats, and a request that
    # turns out unpredictable stops drafting after a step or two.
    PRIOR_RATE = 0.8
    PROBE_INTERVAL = 8

    def __init__(
        self, max_num_drafts: int, adaptive: bool, can_skip: bool, step_cost: StepCost
    ) -> None:
        self.max_num_drafts = max_num_drafts
        self.adaptive = adaptive
        self.can_skip = can_skip
        self.step_cost = ObservedStepCost(step_cost)
        self._acceptance: dict[str, Acceptance] = {}
        self._num_skipped: dict[str, int] = {}

    def num_drafts(self, request_id: str, max_allowed: int, batch_size: int, draft_s: float) -> int:
        """batch_size: requests decoding this step; draft_s: seconds per draft token."""
        limit = min(self.max_num_drafts, max_allowed)
        if not self.adaptive or limit <= 0:
            return max(limit, 0)
        rate = self.acceptance_rate(request_id)
        num, gain = self.best_num_drafts(rate, limit, batch_size, draft_s)
        if gain > 1.0 or not self.can_skip:
            self._num_skipped.pop(request_id, None)
            return num
        skipped = self._num_skipped.get(request_id, 0) + 1
        self._num_skipped[request_id] = skipped
        if skipped % self.PROBE_INTERVAL:
            return 0
        num, gain = self.best_num_drafts(self.PRIOR_RATE, limit, batch_size, draft_s)
        return num if gain > 1.0 else 0

    def best_num_drafts(
        self, rate: float, limit: int, batch_size: int, draft_s: float
    ) -> tuple[int, float]:
        """The k in [1, limit] with the best throughput gain over no drafts, and that gain."""
        plain_s = self.step_cost.seconds_for(batch_size)
        best = (1, 0.0)
        for num in range(1, limit + 1):
            step_s = self.step_cost.seconds_for(batch_size * (1 + num))
            step_s += batch_size * num * draft_s
            gain = expected_tokens(rate, num) * plain_s / step_s
            best = max(best, (num, gain), key=lambda pair: pair[1])
        return best

    def observe(self, request_id: str, num_drafts: int, num_accepted: int) -> None:
        acceptance = self._acceptance.get(request_id)
        if acceptance is None:
            acceptance = self._acceptance[request_id] = Acceptance(self.PRIOR_RATE)
        acceptance.observe(num_drafts, num_accepted)

    def acceptance_rate(self, request_id: str) -> float:
        acceptance = self._acceptance.get(request_id)
        return self.PRIOR_RATE if acceptance is None else acceptance.rate

    def release(self, request_id: str) -> None:
        self._acceptance.pop(request_id, None)
        self._num_skipped.pop(request_id, None)
