"""SchedulerOutput -> tensors -> one forward pass -> logits -> sampled tokens.

The runner owns the K/V tensors (allocated once) and the per-request random generators.
It knows nothing of queues or blocks beyond the block tables the scheduler hands it.

With speculative decoding (`speculator` set), a sequence with draft tokens runs its
[last token, d1..dk] as k + 1 decode rows (each a query over the block table up to its
own position, so verification uses the same attention path as plain decoding), and its
k + 1 logits rows go to the speculator, which returns the accepted tokens.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from warpserve.layers.attention import AttentionMetadata, PrefillChunk
from warpserve.runner.fused_decode import FusedDecoder
from warpserve.runner.memory import allocate_kv
from warpserve.sampling.sampler import Sampler
from warpserve.sampling.types import SampledToken, SamplingRow
from warpserve.scheduler.output import DraftCandidate, ScheduledSequence, SchedulerOutput
from warpserve.spec_decode.speculator import Speculator


class ModelRunner:
    def __init__(
        self,
        model: nn.Module,
        num_blocks: int,
        block_size: int,
        sampler: Sampler,
        decode_kernel: Any = None,
        *,
        decode_backend: str = "eager",
    ) -> None:
        self.model = model
        self.decode_kernel = decode_kernel
        self.block_size = block_size
        self.sampler = sampler
        self.is_fallback = bool(getattr(model, "is_fallback", False))
        self.kv_caches = [] if self.is_fallback else allocate_kv(model, num_blocks, block_size)
        self.generators: dict[str, torch.Generator] = {}
        # Decode-only steps in one C++ call (runner/fused_decode.py); None: eager modules.
        self.fused: FusedDecoder | None = None
        if decode_backend != "eager" and not self.is_fallback:
            self.fused = FusedDecoder.build(model, self.kv_caches, quiet=decode_backend == "auto")
        self.speculator: Speculator | None = None  # set by the engine for speculative decoding

    def release(self, request_id: str) -> None:
        """The request is finished for good: drop its generator (kept across preemption)."""
        self.generators.pop(request_id, None)
        if self.is_fallback:
            self.model.free(request_id)
        if self.speculator is not None:
            self.speculator.release(request_id)

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> dict[str, list[SampledToken]]:
        """The tokens each sampled sequence accepted this step: one, or with drafts the
        accepted drafts and one more."""
        started = time.perf_counter()
        result = self._execute(out)
        if (
            self.speculator is not None
            and out.sequences
            and all(map(_is_decode_rows, out.sequences))
        ):
            # Decode and verify steps teach the speculator what a step of T rows costs.
            num_rows = sum(len(seq.token_ids) for seq in out.sequences)
            self.speculator.observe_step(num_rows, time.perf_counter() - started)
        return result

    def _execute(self, out: SchedulerOutput) -> dict[str, list[SampledToken]]:
        if self.is_fallback:
            for request_id in out.freed_request_ids:
                self.model.free(request_id)
        if self.speculator is not None:
            for request_id in out.freed_request_ids:
                self.speculator.reset(request_id)
        if out.is_empty:
            return {}
        seqs, logits = self._logits(out.sequences)
        if not seqs:
            return {}
        if not any(seq.draft_token_ids for seq in seqs):
            sampled = self.sampler(logits, [self._sampling_row(seq) for seq in seqs])
            return {seq.request_id: [tok] for seq, tok in zip(seqs, sampled, strict=True)}
        return self._sample_and_verify(seqs, logits)

    def propose(self, candidates: list[DraftCandidate]) -> dict[str, list[int]]:
        """Draft tokens for the next step of the candidates that get some."""
        if self.speculator is None or not candidates:
            return {}
        generators = {
            c.request_id: self._generator(c.request_id, c.seed) or self.sampler.default_generator
            for c in candidates
        }
        return self.speculator.propose(candidates, generators)

    def _sample_and_verify(
        self, seqs: list[ScheduledSequence], logits: torch.Tensor
    ) -> dict[str, list[SampledToken]]:
        """logits: one row per plain sequence, k + 1 rows per sequence with k drafts."""
        assert self.speculator is not None
        starts: list[int] = []
        result: dict[str, list[SampledToken]] = {}
        row_index = 0
        for seq in seqs:
            starts.append(row_index)
            row_index += len(seq.draft_token_ids) + 1
        plain = [i for i, seq in enumerate(seqs) if not seq.draft_token_ids]
        if plain:
            plain_logits = logits[torch.tensor([starts[i] for i in plain])]
            sampled = self.sampler(plain_logits, [self._sampling_row(seqs[i]) for i in plain])
            for i, tok in zip(plain, sampled, strict=True):
                result[seqs[i].request_id] = [tok]
        for seq, start in zip(seqs, starts, strict=True):
            if seq.draft_token_ids:
                rows = logits[start : start + len(seq.draft_token_ids) + 1]  # [k + 1, V]
                row = self._sampling_row(seq)
                if row.generator is None:  # unseeded: the sampler's shared generator
                    row.generator = self.sampler.default_generator
                result[seq.request_id] = self.speculator.verify(seq, rows, row)
        return result

    def _logits(
        self, sequences: list[ScheduledSequence]
    ) -> tuple[list[ScheduledSequence], torch.Tensor]:
        if self.is_fallback:
            return self._fallback_logits(sequences)
        # Decodes (and draft verifications) first: they are batched into one attention call.
        ordered = sorted(sequences, key=lambda s: not _is_decode_rows(s))
        if self.fused is None:
            return self._eager_logits(ordered)
        # The fused kernel takes the decode rows; prefill chunks (large GEMMs) stay eager.
        # Rows never depend on each other, so splitting a mixed step changes no result.
        num_decodes = sum(map(_is_decode_rows, ordered))
        if num_decodes == len(ordered):
            return self._fused_logits(ordered)
        if num_decodes == 0:
            return self._eager_logits(ordered)
        decode_seqs, decode_logits = self._fused_logits(ordered[:num_decodes])
        prefill_seqs, prefill_logits = self._eager_logits(ordered[num_decodes:])
        return decode_seqs + prefill_seqs, torch.cat([decode_logits, prefill_logits])

    def _eager_logits(
        self, ordered: list[ScheduledSequence]
    ) -> tuple[list[ScheduledSequence], torch.Tensor]:
        input_ids, positions, meta, sample_idx = self._prepare(ordered)
        hidden = self.model(input_ids, positions, self.kv_caches, meta)
        seqs = [s for s in ordered if s.do_sample]
        return seqs, self.model.compute_logits(hidden[sample_idx])  # [N, vocab]

    def _fused_logits(
        self, decodes: list[ScheduledSequence]
    ) -> tuple[list[ScheduledSequence], torch.Tensor]:
        assert self.fused is not None
        input_ids, positions, meta, sample_idx = self._prepare(decodes)
        logits = self.fused(
            input_ids,
            positions,
            meta.slot_mapping,
            meta.decode_block_tables,
            meta.decode_context_lens,
            sample_idx,
        )
        return [s for s in decodes if s.do_sample], logits

    def _fallback_logits(
        self, sequences: list[ScheduledSequence]
    ) -> tuple[list[ScheduledSequence], torch.Tensor]:
        seqs, rows = [], []
        for seq in sequences:
            logits = self.model.step(seq.request_id, seq.token_ids, seq.num_computed_tokens)
            if seq.do_sample:
                seqs.append(seq)
                rows.append(logits)
        return seqs, torch.stack(rows) if rows else torch.empty(0)

    def _prepare(
        self, seqs: list[ScheduledSequence]
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata, torch.Tensor]:
        bs = self.block_size
        token_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        sample_idx: list[int] = []
        prefills: list[PrefillChunk] = []
        decode_tables: list[list[int]] = []
        decode_lens: list[int] = []
        for seq in seqs:
            start = seq.num_computed_tokens
            num = len(seq.token_ids)
            pos = range(start, start + num)
            if _is_decode_rows(seq):
                decode_tables.extend([seq.block_ids] * num)
                decode_lens.extend(p + 1 for p in pos)
            else:
                table = torch.tensor(seq.block_ids[: -(-(start + num) // bs)], dtype=torch.long)
                prefills.append(PrefillChunk(len(token_ids), num, start, table))
            token_ids.extend(seq.token_ids)
            positions.extend(pos)
            slots.extend(seq.block_ids[p // bs] * bs + p % bs for p in pos)
            if seq.do_sample:
                num_rows = len(seq.draft_token_ids) + 1
                sample_idx.extend(range(len(token_ids) - num_rows, len(token_ids)))
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.long),
            num_decode_tokens=len(decode_lens),
            **_decode_tensors(decode_tables, decode_lens, bs, self._needs_decode_mask()),
            prefills=prefills,
            decode_kernel=self.decode_kernel,
        )
        return (
            torch.tensor(token_ids, dtype=torch.long),
            torch.tensor(positions, dtype=torch.long),
            meta,
            torch.tensor(sample_idx, dtype=torch.long),
        )

    def _needs_decode_mask(self) -> bool:
        """Only the gather + SDPA decode path reads the mask (with the fused decoder, decode
        rows never reach the eager modules)."""
        return self.decode_kernel is None and self.fused is None

    def _generator(self, request_id: str, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        generator = self.generators.get(request_id)
        if generator is None:
            generator = torch.Generator().manual_seed(seed)
            self.generators[request_id] = generator
        return generator

    def _sampling_row(self, seq: ScheduledSequence) -> SamplingRow:
        return SamplingRow(
            params=seq.sampling_params,
            generator=self._generator(seq.request_id, seq.seed),
            prompt_token_ids=seq.prompt_token_ids,
            output_token_ids=seq.output_token_ids,
        )


def _is_decode_rows(seq: ScheduledSequence) -> bool:
    """A single-token decode, or a draft verification (its tokens run as decode rows)."""
    return len(seq.token_ids) == 1 or bool(seq.draft_token_ids)


def _decode_tensors(
    tables: list[list[int]], context_lens: list[int], block_size: int, need_mask: bool
) -> dict[str, torch.Tensor | None]:
    if not tables:
        empty = torch.empty(0, 1, dtype=torch.long)
        return {
            "decode_block_tables": empty,
            "decode_context_lens": torch.empty(0, dtype=torch.long),
            "decode_mask": None,
        }
    max_blocks = max(-(-n // block_size) for n in context_lens)
    padded = [t[:max_blocks] + [0] * (max_blocks - len(t[:max_blocks])) for t in tables]
    lens = torch.tensor(context_lens, dtype=torch.long)
    mask = None
    if need_mask:
        mask = torch.arange(max_blocks * block_size)[None, :] < lens[:, None]  # [B, S]
        mask = mask[:, None, None, :]  # [B, 1, 1, S]
    return {
        "decode_block_tables": torch.tensor(padded, dtype=torch.long),
        "decode_context_lens": lens,
        "decode_mask": mask,
    }
