"""Per-request state the runners keep for sampling: a seeded request's own generator
(kept until release), and the request id its sampling row carries (it keys a constrained
request's grammar matcher, which release drops)."""

from __future__ import annotations

import torch

from warpserve.request import SamplingParams
from warpserve.runner.generators import RequestGenerators
from warpserve.scheduler.output import ScheduledSequence


def _seq(request_id: str, seed: int | None) -> ScheduledSequence:
    return ScheduledSequence(
        request_id, [5], 3, [0], True, SamplingParams(temperature=1.0), [1, 2, 3], [], seed
    )


def test_rows_carry_the_request_id_and_its_own_generator() -> None:
    generators = RequestGenerators()
    row = generators.sampling_row(_seq("a", 7))
    assert row.request_id == "a"
    assert row.generator is generators.sampling_row(_seq("a", 7)).generator  # kept
    assert generators.sampling_row(_seq("b", None)).generator is None  # the sampler's
    first = torch.rand(1, generator=row.generator)
    generators.release("a")
    fresh = generators.sampling_row(_seq("a", 7)).generator
    assert fresh is not row.generator
    assert torch.equal(torch.rand(1, generator=fresh), first)  # same seed, from the start
