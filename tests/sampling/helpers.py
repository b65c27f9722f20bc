"""Small builders shared by the sampler tests."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from warpserve.request import SamplingParams
from warpserve.sampling.types import SamplingRow


def make_row(
    prompt: Sequence[int] = (),
    output: Sequence[int] = (),
    seed: int | None = None,
    **params: object,
) -> SamplingRow:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return SamplingRow(SamplingParams(**params), generator, list(prompt), list(output))


def softmax(logits: Sequence[float]) -> list[float]:
    """Reference softmax in float64 Python, independent of torch."""
    finite = [x for x in logits if x != -math.inf]
    top = max(finite)
    weights = [math.exp(x - top) if x != -math.inf else 0.0 for x in logits]
    total = sum(weights)
    return [w / total for w in weights]
