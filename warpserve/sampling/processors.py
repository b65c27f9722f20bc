"""Logit processors that can change which token wins: penalties, logit_bias, min_tokens.

They apply to every row that asks for them, greedy or random, before temperature and the
truncation filters. Order, and why:
  1. repetition penalty (Transformers' rule) over prompt + output tokens,
  2. presence and frequency penalties (OpenAI's rule) over output tokens only,
  3. logit_bias, after the penalties so a user's bias is never scaled by the repetition
     penalty: it is the last word on a token's score,
  4. the min_tokens mask, which sets end-of-sequence tokens to -inf and so beats any bias.
Each one gathers and rewrites only the (row, token) entries it changes, so its cost
follows the number of token ids involved, never B x V.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch

from warpserve.request import SamplingParams
from warpserve.sampling.types import SamplingRow


def needs_processing(row: SamplingRow) -> bool:
    """Whether any processor in this module would touch the row's logits this step."""
    params = row.params
    return (
        has_penalties(params)
        or bool(params.logit_bias)
        or len(row.output_token_ids) < params.min_tokens
    )


def has_penalties(params: SamplingParams) -> bool:
    return (
        params.repetition_penalty != 1.0
        or params.presence_penalty != 0.0
        or params.frequency_penalty != 0.0
    )


def penalize_repetition(values: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Transformers' rule for seen tokens: positive logits / penalty, negative * penalty.

    values, penalty [n]. Both branches push the token towards "less likely" when
    penalty > 1 (and towards "more likely" when < 1), whatever the logit's sign.
    """
    return torch.where(values > 0, values / penalty, values * penalty)


def penalize_presence_frequency(
    values: torch.Tensor, counts: torch.Tensor, presence: torch.Tensor, frequency: torch.Tensor
) -> torch.Tensor:
    """OpenAI's rule: logit - (count * frequency + (count > 0) * presence).

    values, counts, presence, frequency [n]; counts: occurrences in the output so far.
    """
    return values - (counts * frequency + (counts > 0) * presence)


def token_pairs(
    token_ids: Sequence[Iterable[int]], lengths: Sequence[int], vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct (row, token) pairs of per-row id lists, and how often each occurs.

    Returns rows [n] long (positions in token_ids), tokens [n] long, counts [n] float32,
    sorted by row then token. One torch.unique for the whole batch.
    """
    flat = torch.tensor(list(itertools.chain.from_iterable(token_ids)), dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    keys, counts = torch.unique(rows * vocab_size + flat, return_counts=True)
    return keys // vocab_size, keys % vocab_size, counts.float()


def apply_penalties(logits: torch.Tensor, rows: Sequence[SamplingRow]) -> None:
    """Repetition, then presence and frequency penalties, on the rows that set them.

    logits [R, V] float32, one row per entry of `rows`, edited in place.
    """
    repeat = [i for i, row in enumerate(rows) if row.params.repetition_penalty != 1.0]
    if repeat:
        _penalize_repetitions(logits, repeat, rows)
    additive = [
        i
        for i, row in enumerate(rows)
        if row.params.presence_penalty != 0.0 or row.params.frequency_penalty != 0.0
    ]
    if additive:
        _penalize_presence_frequency(logits, additive, rows)


def _penalize_repetitions(
    logits: torch.Tensor, index: list[int], rows: Sequence[SamplingRow]
) -> None:
    picked = [rows[i] for i in index]
    seen = [itertools.chain(row.prompt_token_ids, row.output_token_ids) for row in picked]
    lengths = [len(row.prompt_token_ids) + len(row.output_token_ids) for row in picked]
    local, tokens, _ = token_pairs(seen, lengths, logits.shape[-1])  # [n] each
    penalty = _per_pair([row.params.repetition_penalty for row in picked], local, logits)
    where = (_long(index, logits)[local.to(logits.device)], tokens.to(logits.device))
    logits[where] = penalize_repetition(logits[where], penalty)


def _penalize_presence_frequency(
    logits: torch.Tensor, index: list[int], rows: Sequence[SamplingRow]
) -> None:
    picked = [rows[i] for i in index]
    outputs = [row.output_token_ids for row in picked]
    local, tokens, counts = token_pairs(outputs, [len(ids) for ids in outputs], logits.shape[-1])
    presence = _per_pair([row.params.presence_penalty for row in picked], local, logits)
    frequency = _per_pair([row.params.frequency_penalty for row in picked], local, logits)
    where = (_long(index, logits)[local.to(logits.device)], tokens.to(logits.device))
    counts = counts.to(logits.device)
    logits[where] = penalize_presence_frequency(logits[where], counts, presence, frequency)


def apply_logit_bias(logits: torch.Tensor, rows: Sequence[SamplingRow]) -> None:
    """Add each row's logit_bias to its logits, in place; logits [R, V].

    Token ids >= V are ignored here, so that one bad request cannot fail a whole batch;
    the engine rejects them at admission with `check_token_ids` instead.
    """
    vocab_size = logits.shape[-1]
    row_ids: list[int] = []
    token_ids: list[int] = []
    biases: list[float] = []
    for i, row in enumerate(rows):
        for token_id, bias in row.params.logit_bias.items():
            if int(token_id) < vocab_size:
                row_ids.append(i)
                token_ids.append(int(token_id))
                biases.append(float(bias))
    if row_ids:
        where = (_long(row_ids, logits), _long(token_ids, logits))
        logits.index_put_(where, torch.tensor(biases, device=logits.device), accumulate=True)


def apply_min_tokens(
    logits: torch.Tensor, rows: Sequence[SamplingRow], eos_token_ids: frozenset[int]
) -> None:
    """Set stop tokens to -inf on rows with fewer than min_tokens outputs; logits [R, V].

    The stop tokens are the row's stop_token_ids plus the model's EOS ids, except under
    ignore_eos: there EOS does not end the sequence, so masking it would only distort
    the distribution.
    """
    vocab_size = logits.shape[-1]
    row_ids: list[int] = []
    token_ids: list[int] = []
    for i, row in enumerate(rows):
        if len(row.output_token_ids) >= row.params.min_tokens:
            continue
        stops = set(row.params.stop_token_ids)
        if not row.params.ignore_eos:
            stops |= eos_token_ids
        masked = [t for t in sorted(stops) if t < vocab_size]
        row_ids += [i] * len(masked)
        token_ids += masked
    if row_ids:
        logits[_long(row_ids, logits), _long(token_ids, logits)] = float("-inf")


def process_logits(
    logits: torch.Tensor, rows: Sequence[SamplingRow], eos_token_ids: frozenset[int]
) -> None:
    """All of this module's processors, in the order the module docstring gives."""
    apply_penalties(logits, rows)
    apply_logit_bias(logits, rows)
    apply_min_tokens(logits, rows, eos_token_ids)


def check_token_ids(params: SamplingParams, vocab_size: int) -> None:
    """Raise ValueError when a request names token ids the model does not have.

    For the engine to call at admission, where the vocabulary size is known; the
    sampler itself ignores such ids rather than fail a batch.
    """
    if any(int(t) >= vocab_size for t in params.logit_bias):
        raise ValueError(f"logit_bias token ids must be < {vocab_size} (the vocabulary size)")
    if any(t >= vocab_size for t in params.stop_token_ids):
        raise ValueError(f"stop_token_ids must be < {vocab_size} (the vocabulary size)")


def _per_pair(values: list[float], local_rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row value repeated for each (row, token) pair: [n]."""
    per_row = torch.tensor(values, dtype=like.dtype)
    return per_row[local_rows].to(like.device)


def _long(values: list[int], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=like.device)
