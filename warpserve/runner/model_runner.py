"""SchedulerOutput -> chunks -> one forward pass -> logits -> sampled tokens.

The runner owns the target's executor (its K/V tensors and how decode rows run, decided
when built: execution/executor.py), the per-request random generators, and its one
`Speculator` (runner/speculation.py). It knows nothing of queues or blocks beyond the
block tables the scheduler hands it.

A sequence with draft tokens runs its [last token, d1..dk] as k + 1 decode rows (each a
query over the block table up to its own position, so verification uses the same
attention path as plain decoding), and its k + 1 logits rows go to the speculator, which
returns the accepted tokens.
"""

from __future__ import annotations

import time

import torch

from warpserve.execution.executor import ModelExecutor
from warpserve.execution.inputs import Chunk
from warpserve.runner.generators import RequestGenerators
from warpserve.runner.speculation import Speculator
from warpserve.sampling.sampler import Sampler
from warpserve.sampling.types import SampledToken
from warpserve.scheduler.output import DraftCandidate, ScheduledSequence, SchedulerOutput
from warpserve.spec_decode.types import SpecDecodeStats


class ModelRunner:
    def __init__(self, executor: ModelExecutor, sampler: Sampler, speculator: Speculator) -> None:
        self.executor = executor
        self.sampler = sampler
        self.speculator = speculator
        self.generators = RequestGenerators()

    @property
    def model(self) -> torch.nn.Module:
        return self.executor.model  # type: ignore[return-value]

    def release(self, request_id: str) -> None:
        """The request is finished for good: drop its generator (kept across preemption)."""
        self.generators.release(request_id)
        self.sampler.release(request_id)
        self.speculator.release(request_id)

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> dict[str, list[SampledToken]]:
        """The tokens each sampled sequence accepted this step: one, or with drafts the
        accepted drafts and one more."""
        started = time.perf_counter()
        result = self._execute(out)
        if out.sequences and all(map(_is_decode_rows, out.sequences)):
            # Decode and verify steps teach the speculator what a step of T rows costs.
            num_rows = sum(len(seq.token_ids) for seq in out.sequences)
            self.speculator.observe_step(num_rows, time.perf_counter() - started)
        return result

    def propose(self, candidates: list[DraftCandidate]) -> dict[str, list[int]]:
        """Draft tokens for the next step of the candidates that get some."""
        generators = {
            c.request_id: self.generators.get(c.request_id, c.seed)
            or self.sampler.default_generator
            for c in candidates
        }
        return self.speculator.propose(candidates, generators)

    def spec_decode_stats(self) -> SpecDecodeStats:
        return self.speculator.stats()

    def _execute(self, out: SchedulerOutput) -> dict[str, list[SampledToken]]:
        for request_id in out.freed_request_ids:
            self.speculator.reset(request_id)
        if out.is_empty:
            return {}
        # Decodes (and draft verifications) first: they are batched into one attention call.
        ordered = sorted(out.sequences, key=lambda s: not _is_decode_rows(s))
        logits = self.executor.logits([_chunk(seq) for seq in ordered])
        seqs = [seq for seq in ordered if seq.do_sample]
        if not seqs:
            return {}
        if not any(seq.draft_token_ids for seq in seqs):
            sampled = self.sampler(logits, [self.generators.sampling_row(seq) for seq in seqs])
            return {seq.request_id: [tok] for seq, tok in zip(seqs, sampled, strict=True)}
        return self._sample_and_verify(seqs, logits)

    def _sample_and_verify(
        self, seqs: list[ScheduledSequence], logits: torch.Tensor
    ) -> dict[str, list[SampledToken]]:
        """logits: one row per plain sequence, k + 1 rows per sequence with k drafts."""
        starts: list[int] = []
        result: dict[str, list[SampledToken]] = {}
        row_index = 0
        for seq in seqs:
            starts.append(row_index)
            row_index += len(seq.draft_token_ids) + 1
        plain = [i for i, seq in enumerate(seqs) if not seq.draft_token_ids]
        if plain:
            plain_logits = logits[torch.tensor([starts[i] for i in plain])]
            sampled = self.sampler(
                plain_logits, [self.generators.sampling_row(seqs[i]) for i in plain]
            )
            for i, tok in zip(plain, sampled, strict=True):
                result[seqs[i].request_id] = [tok]
        for seq, start in zip(seqs, starts, strict=True):
            if seq.draft_token_ids:
                rows = logits[start : start + len(seq.draft_token_ids) + 1]  # [k + 1, V]
                row = self.generators.sampling_row(seq)
                if row.generator is None:  # unseeded: the sampler's shared generator
                    row.generator = self.sampler.default_generator
                result[seq.request_id] = self.speculator.verify(seq, rows, row)
        return result


def _is_decode_rows(seq: ScheduledSequence) -> bool:
    """A single-token decode, or a draft verification (its tokens run as decode rows)."""
    return len(seq.token_ids) == 1 or bool(seq.draft_token_ids)


def _chunk(seq: ScheduledSequence) -> Chunk:
    """Logits for the sequence's last token, or for [last, d1..dk] when it verifies drafts."""
    num_logits = len(seq.draft_token_ids) + 1 if seq.do_sample else 0
    return Chunk(
        seq.token_ids, seq.num_computed_tokens, seq.block_ids, _is_decode_rows(seq), num_logits
    )
