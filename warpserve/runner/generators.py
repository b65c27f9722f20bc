"""Per-request random generators: a seeded request draws from its own generator, so its
tokens do not depend on the batch it runs in; kept across preemption, dropped at the end."""

from __future__ import annotations

import torch

from warpserve.sampling.types import SamplingRow
from warpserve.scheduler.output import ScheduledSequence


class RequestGenerators:
    def __init__(self) -> None:
        self._generators: dict[str, torch.Generator] = {}

    def get(self, request_id: str, seed: int | None) -> torch.Generator | None:
        """The request's generator; None when it is unseeded (the sampler's shared one)."""
        if seed is None:
            return None
        generator = self._generators.get(request_id)
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
            self._generators[request_id] = generator
        return generator

    def release(self, request_id: str) -> None:
        self._generators.pop(request_id, None)

    def sampling_row(self, seq: ScheduledSequence) -> SamplingRow:
        return SamplingRow(
            params=seq.sampling_params,
            generator=self.get(seq.request_id, seq.seed),
            prompt_token_ids=seq.prompt_token_ids,
            output_token_ids=seq.output_token_ids,
            request_id=seq.request_id,  # keys its grammar matcher, if it is constrained
        )
