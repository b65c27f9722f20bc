"""Structured output in the sampler: the grammar masks of the constrained rows of a step.

A constrained request's matcher (warpserve/structured) lives here, created at its first
sampled token. Before a step samples, every constrained row's matcher is brought to the
row's output tokens, which are the tokens the scheduler accepted (one per step, or the
accepted drafts plus one): tokens the matcher has not seen are accepted, and if the row
holds fewer or different tokens (rejected drafts, a stop string cut) the matcher rolls
back to the common prefix first. So the matcher never depends on who appended what: its
state is a function of (grammar, output tokens), checked every step. The row's allowed
next tokens go into a bitmask; disallowed logits become -inf before any processor or
filter runs. Rows without a constraint are never copied or touched, and a step without
constrained rows costs one scan of the rows.

Matchers are keyed by the row's request id when the runner gives one, else by the
identity of its output list (the scheduler's, one per request). A matcher not used for
MAX_IDLE_STEPS constrained steps is dropped (finished, aborted or long preempted: a
preempted request coming back is caught up from its outputs), and `release` drops one
at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from warpserve.sampling.types import SamplingRow
from warpserve.structured.spec import CompiledGrammar, Matcher

logger = logging.getLogger(__name__)

MAX_IDLE_STEPS = 64


@dataclass
class _RowState:
    grammar: CompiledGrammar
    matcher: Matcher
    accepted: list[int] = field(default_factory=list)  # output tokens the matcher consumed
    is_broken: bool = False  # an output token the grammar rejects: only a stop token is left
    last_step: int = 0


class GrammarMasker:
    def __init__(self, eos_token_ids: Collection[int]) -> None:
        self.eos_token_ids = sorted(eos_token_ids)
        self._states: dict[str | int, _RowState] = {}
        self._num_steps = 0

    @staticmethod
    def constrained_rows(rows: Sequence[SamplingRow]) -> list[int]:
        return [i for i, row in enumerate(rows) if row.params.structured is not None]

    def release(self, request_id: str) -> None:
        self._states.pop(request_id, None)

    def apply(
        self, logits: torch.Tensor, rows: Sequence[SamplingRow], index: list[int]
    ) -> torch.Tensor:
        """A copy of logits [B, V] float32 with rows `index` masked to their grammars."""
        started = time.perf_counter()
        self._num_steps += 1
        vocab_size = logits.shape[1]
        states = [self._sync(rows[i]) for i in index]
        width = max(state.grammar.vocab_size for state in states)
        bitmask = torch.full((len(index), -(-width // 32)), -1, dtype=torch.int32)  # [R, W]
        for r, state in enumerate(states):
            if state.is_broken:
                bitmask[r] = 0
            else:
                state.matcher.fill_bitmask(bitmask, r)
        allowed = unpack_bitmask(bitmask, vocab_size)  # [R, V] bool
        for r, state in enumerate(states):
            allowed[r, state.grammar.vocab_size :] = False  # model rows past the tokenizer's
            if state.is_broken:
                allowed[r, self.eos_token_ids] = True
        out = masked_logits(logits, index, allowed)
        self._forget_idle()
        elapsed = time.perf_counter() - started
        states[0].grammar.stats.add(
            num_mask_steps=1, num_masked_rows=len(index), mask_seconds=elapsed
        )
        return out

    def _sync(self, row: SamplingRow) -> _RowState:
        """The row's matcher, moved to exactly the row's output tokens."""
        spec = row.params.structured
        assert spec is not None
        key = row.request_id if row.request_id is not None else id(row.output_token_ids)
        state = self._states.get(key)
        if state is None or state.grammar is not spec.grammar:
            state = self._states[key] = _RowState(spec.grammar, spec.grammar.new_matcher())
        state.last_step = self._num_steps
        outputs = row.output_token_ids
        common = _common_prefix(state.accepted, outputs)
        if common < len(state.accepted):
            if state.is_broken:  # the rejected token may be gone: start again
                state.matcher, state.accepted, state.is_broken = (
                    spec.grammar.new_matcher(),
                    [],
                    False,
                )
                common = 0
            else:
                state.matcher.rollback(len(state.accepted) - common)
                del state.accepted[common:]
        for token_id in outputs[common:]:
            if state.is_broken or not state.matcher.accept(token_id):
                self._break(key, state, token_id)
                break
            state.accepted.append(token_id)
        return state

    def _break(self, key: str | int, state: _RowState, token_id: int) -> None:
        if not state.is_broken:
            logger.error("request %s: token %d is outside its grammar; ending it", key, token_id)
        state.is_broken = True

    def _forget_idle(self) -> None:
        oldest = self._num_steps - MAX_IDLE_STEPS
        for key in [k for k, s in self._states.items() if s.last_step < oldest]:
            del self._states[key]


def _common_prefix(accepted: list[int], outputs: Sequence[int]) -> int:
    n = len(accepted)
    if n <= len(outputs) and list(outputs[:n]) == accepted:  # the usual case: one C compare
        return n
    for i, (a, b) in enumerate(zip(accepted, outputs, strict=False)):
        if a != b:
            return i
    return min(n, len(outputs))


def unpack_bitmask(bitmask: torch.Tensor, vocab_size: int) -> np.ndarray:
    """int32 [R, W] -> bool [R, vocab_size] (False past 32 W). numpy, single-threaded:
    torch's element-wise kernels here (~50k elements a row) lose more to waking threads
    than they gain, and on a busy machine much more."""
    bits = np.unpackbits(bitmask.numpy().view(np.uint8), axis=-1, bitorder="little")
    allowed = bits.view(np.bool_)  # [R, 32 W]; little-endian words: byte k holds bits 8k..8k+7
    if allowed.shape[1] >= vocab_size:
        return allowed[:, :vocab_size]
    return np.pad(allowed, ((0, 0), (0, vocab_size - allowed.shape[1])))


def masked_logits(logits: torch.Tensor, index: list[int], allowed: np.ndarray) -> torch.Tensor:
    """logits [B, V] with rows `index` set to -inf where not allowed [R, V]; a new tensor."""
    rows = logits.numpy() if len(index) == logits.shape[0] else logits[index].numpy()
    masked = torch.from_numpy(np.where(allowed, rows, np.float32(-np.inf)))  # [R, V]
    if len(index) == logits.shape[0]:
        return masked
    out = logits.clone()
    out[index] = masked
    return out
