"""The runner for Transformers-fallback models: one sequence at a time through the
model's own per-request caches, no paged K/V, no speculation (models/hf_fallback.py)."""

from __future__ import annotations

import torch

from warpserve.models.hf_fallback import TransformersCausalLM
from warpserve.runner.generators import RequestGenerators
from warpserve.sampling.sampler import Sampler
from warpserve.sampling.types import SampledToken
from warpserve.scheduler.output import DraftCandidate, SchedulerOutput
from warpserve.spec_decode.types import SpecDecodeStats


class FallbackRunner:
    def __init__(self, model: TransformersCausalLM, sampler: Sampler) -> None:
        self.model = model
        self.sampler = sampler
        self.generators = RequestGenerators()

    def release(self, request_id: str) -> None:
        self.generators.release(request_id)
        self.sampler.release(request_id)
        self.model.free(request_id)

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> dict[str, list[SampledToken]]:
        for request_id in out.freed_request_ids:
            self.model.free(request_id)
        seqs, rows = [], []
        for seq in out.sequences:
            logits = self.model.step(seq.request_id, seq.token_ids, seq.num_computed_tokens)
            if seq.do_sample:
                seqs.append(seq)
                rows.append(logits)
        if not seqs:
            return {}
        sampled = self.sampler(
            torch.stack(rows), [self.generators.sampling_row(seq) for seq in seqs]
        )
        return {seq.request_id: [tok] for seq, tok in zip(seqs, sampled, strict=True)}

    def propose(self, candidates: list[DraftCandidate]) -> dict[str, list[int]]:
        return {}

    def spec_decode_stats(self) -> SpecDecodeStats:
        return SpecDecodeStats()
