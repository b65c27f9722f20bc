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
from collections.abc import Mapping, Sequence

import torch

from warpserve.execution.executor import ModelExecutor
from warpserve.execution.inputs import Chunk
from warpserve.request import SamplingParams
from warpserve.scheduler.output import DraftCandidate
from warpserve.spec_decode.types import Proposal

# Chunks of at most this many tokens run as decode rows (each token a query over the block
# table up to its own position), so all of them go through one batched paged-decode call;
# only a long catch-up (a prompt) runs as a prefill chunk.
MAX_DECODE_ROWS = 16
# With a fused decoder, forwards of up to this many tokens run through it whole (catch-up
# chunks of whole prompts included: it keeps up with the eager GEMMs at a few hundred rows).
FUSED_MAX_TOKENS = 512


class ModelDrafter:
    COST_DECAY = 0.9

    def __init__(self, name: str, executor: ModelExecutor, shares_target_cache: bool) -> None:
        """shares_target_cache: the K/V of every computed position are already there (the
        drafter is the target's first layers), so only the last sampled token is fed."""
        self.name = name
        self.executor = executor
        self.shares_target_cache = shares_target_cache
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
        token_ids = list(candidate.token_ids[start:])
        is_rows = len(token_ids) <= MAX_DECODE_ROWS
        return Chunk(token_ids, start, candidate.block_ids, is_rows)

    def _next_chunk(self, candidate: DraftCandidate, drafts: list[int]) -> Chunk:
        # Draft j (1-based) sits at position num_tokens - 1 + j.
        start = len(candidate.token_ids) - 1 + len(drafts)
        return Chunk([drafts[-1]], start, candidate.block_ids, is_decode_rows=True)

    def _timed_forward(self, chunks: list[Chunk]) -> torch.Tensor:
        started = time.perf_counter()
        logits = self.executor.logits(chunks)  # [len(chunks), V]: each chunk's last token
        if all(len(chunk.token_ids) == 1 for chunk in chunks):
            per_token_s = (time.perf_counter() - started) / len(chunks)
            decay = self.COST_DECAY if self.draft_cost_s else 0.0
            self.draft_cost_s = decay * self.draft_cost_s + (1 - decay) * per_token_s
        return logits


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
