"""Drafting with a causal LM over the target's block tables: the engine of both the
draft-model and the layer-skip proposers.

Per step and request with k drafts to propose: one forward over the tokens the drafter
has not yet computed (ending with the last sampled token), then k - 1 single-token
forwards, each batched across requests. The drafter writes K/V at the same slots as the
target (same block tables, its own tensors or the target's own first layers), up to
position num_tokens + k - 2: the scheduler's lookahead slots make room for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import torch

from warpserve.request import SamplingParams
from warpserve.scheduler.output import DraftCandidate
from warpserve.spec_decode.batch import Chunk, build_inputs
from warpserve.spec_decode.types import Proposal

# Forwards of up to this many tokens run through the fused decoder (catch-up chunks of
# whole prompts included: it keeps up with the eager GEMMs at a few hundred rows).
FUSED_MAX_ROWS = 512


class DraftLM(Protocol):
    def __call__(
        self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list, meta: object
    ) -> torch.Tensor: ...  # [T, hidden]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...  # [N, vocab] float32


class ModelDrafter:
    COST_DECAY = 0.9

    def __init__(
        self,
        name: str,
        model: DraftLM,
        kv_caches: list[torch.Tensor],
        block_size: int,
        decode_kernel: object,
        shares_target_cache: bool,
        fused: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        """shares_target_cache: the K/V of every computed position are already there (the
        drafter is the target's first layers), so only the last sampled token is fed.
        fused: a fused decoder over `model` and `kv_caches` (runner/fused_decode.py) for
        forwards whose chunks are all decode rows; longer catch-up chunks stay eager."""
        self.name = name
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.decode_kernel = decode_kernel
        self.shares_target_cache = shares_target_cache
        self.fused = fused
        self._num_computed: dict[str, int] = {}  # positions in the drafter's own cache
        # Seconds per draft token per request: single-token forwards over the batch,
        # decayed average (catch-up forwards of whole prompts would distort it).
        self.draft_cost_s = 0.0

    @torch.inference_mode()
    def propose(
        self,
        candidates: Sequence[DraftCandidate],
        num_drafts: Mapping[str, int],
        generators: Mapping[str, torch.Generator],
    ) -> dict[str, Proposal]:
        active = [c for c in candidates if num_drafts.get(c.request_id, 0) > 0]
        drafts: dict[str, list[int]] = {c.request_id: [] for c in active}
        probs: dict[str, list[torch.Tensor]] = {c.request_id: [] for c in active}
        chunks = [self._catch_up_chunk(c) for c in active]
        while active:
            logits = self._timed_forward(chunks)  # [len(active), V]
            for candidate, row in zip(active, logits, strict=True):
                rid = candidate.request_id
                token_id, row_probs = _draw(row, candidate.sampling_params, generators.get(rid))
                drafts[rid].append(token_id)
                if row_probs is not None:
                    probs[rid].append(row_probs)
            active = [c for c in active if len(drafts[c.request_id]) < num_drafts[c.request_id]]
            chunks = [self._next_chunk(c, drafts[c.request_id]) for c in active]
        return {rid: Proposal(ids, _stack(probs[rid])) for rid, ids in drafts.items()}

    def reset(self, request_id: str) -> None:
        self._num_computed.pop(request_id, None)

    def release(self, request_id: str) -> None:
        self._num_computed.pop(request_id, None)

    def _catch_up_chunk(self, candidate: DraftCandidate) -> Chunk:
        num_tokens = len(candidate.token_ids)
        start = num_tokens - 1
        if not self.shares_target_cache:
            start = min(self._num_computed.get(candidate.request_id, 0), start)
            # Positions [0, num_tokens) will hold these tokens' K/V after this forward;
            # the drafts written beyond are recomputed next time (cheap, and never stale).
            self._num_computed[candidate.request_id] = num_tokens
        return Chunk(list(candidate.token_ids[start:]), start, candidate.block_ids)

    def _next_chunk(self, candidate: DraftCandidate, drafts: list[int]) -> Chunk:
        # Draft j (1-based) sits at position num_tokens - 1 + j.
        return Chunk([drafts[-1]], len(candidate.token_ids) - 1 + len(drafts), candidate.block_ids)

    def _timed_forward(self, chunks: list[Chunk]) -> torch.Tensor:
        started = time.perf_counter()
        logits = self._forward(chunks)
        if all(len(chunk.token_ids) == 1 for chunk in chunks):
            per_token_s = (time.perf_counter() - started) / len(chunks)
            decay = self.COST_DECAY if self.draft_cost_s else 0.0
            self.draft_cost_s = decay * self.draft_cost_s + (1 - decay) * per_token_s
        return logits

    def _forward(self, chunks: list[Chunk]) -> torch.Tensor:
        if self.fused is not None and sum(len(c.token_ids) for c in chunks) <= FUSED_MAX_ROWS:
            return self._fused_forward(chunks)
        inputs = build_inputs(chunks, self.block_size, self.decode_kernel)
        hidden = self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta)
        return self.model.compute_logits(hidden[inputs.last_index])

    def _fused_forward(self, chunks: list[Chunk]) -> torch.Tensor:
        """Every token as a decode row (a query over the block table up to its own
        position: the kernel writes each layer's K/V for all rows before attending), so a
        catch-up chunk is causal attention as a prefill computes it."""
        assert self.fused is not None
        rows, last_rows = [], []
        for chunk in chunks:
            rows.extend(
                Chunk([token_id], chunk.start + i, chunk.block_ids)
                for i, token_id in enumerate(chunk.token_ids)
            )
            last_rows.append(len(rows) - 1)
        inputs = build_inputs(rows, self.block_size, self.decode_kernel)
        meta = inputs.meta
        return self.fused(
            inputs.input_ids,
            inputs.positions,
            meta.slot_mapping,
            meta.decode_block_tables,
            meta.decode_context_lens,
            torch.tensor(last_rows, dtype=torch.long),
        )


def _draw(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[int, torch.Tensor | None]:
    """A greedy request drafts the argmax (deterministic: no distribution to keep); a
    sampled one draws from softmax(logits / temperature) and keeps it for verification."""
    if params.is_greedy:
        return int(logits.argmax()), None
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)  # [V]
    return int(torch.multinomial(probs, 1, generator=generator)), probs


def _stack(rows: list[torch.Tensor]) -> torch.Tensor | None:
    return torch.stack(rows) if rows else None
