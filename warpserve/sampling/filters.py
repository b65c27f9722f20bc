"""Temperature and truncation (top-k, top-p, min-p) for the randomly sampled rows.

None of these can change a row's argmax, so greedy rows skip them. The order follows
Transformers: temperature, then top-k, top-p and min-p, each filter seeing the previous
one's result. Every filter keeps a prefix of the row's tokens sorted by logit, so
together they keep the tokens whose logit is >= one cutoff per row: the largest of the
three. The filters compute that cutoff and never write B x V masks; the draw applies it
(draw.py). Each filter runs only on the rows that enable it, and only top-p may sort a
full row, as a last resort.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from warpserve.request import SamplingParams
from warpserve.sampling.draw import weights_

# How many of a row's best tokens top-p inspects, in turn, before it falls back to a
# full-vocabulary sort. A nucleus is usually far smaller than the vocabulary: torch.topk
# of 256 costs a few argmaxes, of 4096 about a sixth of a 49k sort.
TOP_P_CANDIDATES = (256, 4096)


def apply_temperature(logits: torch.Tensor, params: Sequence[SamplingParams]) -> None:
    """logits [R, V] /= each row's temperature (all > 0), in place."""
    temperatures = [p.temperature for p in params]
    if any(t != 1.0 for t in temperatures):
        logits /= column(temperatures, logits)


def truncation_cutoffs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """The smallest logit each row keeps after top-k, top-p and min-p: [R, 1].

    logits [R, V], already divided by the temperature. -inf means the row keeps all.
    """
    vocab_size = logits.shape[-1]
    cutoff = torch.full((logits.shape[0], 1), float("-inf"), device=logits.device)
    top_k_rows = [i for i, p in enumerate(params) if p.top_k is not None and p.top_k < vocab_size]
    if top_k_rows:
        top_k = torch.tensor([params[i].top_k for i in top_k_rows], device=logits.device)
        cutoff[top_k_rows] = top_k_cutoff(rows_of(logits, top_k_rows), top_k)
    top_p_rows = [i for i, p in enumerate(params) if p.top_p < 1.0]
    if top_p_rows:
        top_p = column([params[i].top_p for i in top_p_rows], logits)
        after_k = cutoff[top_p_rows]
        cutoff[top_p_rows] = top_p_cutoff(rows_of(logits, top_p_rows), top_p, after_k)
    min_p_rows = [i for i, p in enumerate(params) if p.min_p > 0.0]
    if min_p_rows:
        min_p = column([params[i].min_p for i in min_p_rows], logits)
        found = min_p_cutoff(rows_of(logits, min_p_rows), min_p)
        cutoff[min_p_rows] = torch.maximum(cutoff[min_p_rows], found)
    return cutoff


def top_k_cutoff(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """The row's k-th largest logit [R, 1]; logits [R, V], top_k [R] long in [1, V].

    Keeping every logit >= it keeps the tokens tied with the k-th too (as Transformers
    and vLLM do), so the kept set never depends on how a sort orders ties.
    """
    values = logits.topk(int(top_k.max()), dim=-1).values  # [R, k_max], descending
    return values.gather(-1, (top_k - 1).unsqueeze(1))


def top_p_cutoff(
    logits: torch.Tensor,
    top_p: torch.Tensor,
    floor: torch.Tensor,
    num_candidates: Sequence[int] = TOP_P_CANDIDATES,
) -> torch.Tensor:
    """The smallest logit [R, 1] of the smallest set of best tokens whose mass reaches top_p.

    logits [R, V]; top_p [R, 1], each in (0, 1); floor [R, 1]: the cutoff of the filters
    before (top-k), whose surviving tokens form the distribution top-p sees. Precisely:
    going down the sorted distribution, a token is kept while the probability of the
    tokens before it is < top_p; so the best token is always kept, and every token tied
    with the last kept one too. Only the head of the sorted row matters: look at the
    best num_candidates[0] tokens, then num_candidates[1] for the rows whose nucleus is
    larger, and so on; rows left after the last size sort the whole row.
    """
    vocab_size = logits.shape[-1]
    log_total = log_mass(logits, floor)  # [R, 1]
    cutoff = torch.empty_like(log_total)  # every row is written below
    pending = torch.arange(logits.shape[0], device=logits.device)  # rows without a cutoff
    for size in [*num_candidates, vocab_size]:
        size = min(size, vocab_size)
        head = rows_of(logits, pending).topk(size, dim=-1).values  # [r, size], descending
        found, is_complete = _nucleus_cutoff(
            head, log_total[pending], top_p[pending], floor[pending]
        )
        is_complete |= size == vocab_size  # the whole row: nothing lies beyond
        cutoff[pending[is_complete]] = found[is_complete]
        pending = pending[~is_complete]
        if len(pending) == 0:
            break
    return cutoff


def _nucleus_cutoff(
    head: torch.Tensor, log_total: torch.Tensor, top_p: torch.Tensor, floor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The smallest kept logit [R, 1] of each row, and whether the nucleus ends inside
    these K sorted logits head [R, K] (is_complete [R] bool)."""
    probs = (head - log_total).exp() * (head >= floor)  # [R, K]
    # Exclusive prefix sums (not cumsum - probs, which rounding can make dip): exactly
    # monotone, so the kept tokens form a prefix and can be counted.
    mass_before = F.pad(probs.cumsum(dim=-1)[:, :-1], (1, 0))  # [R, K]
    is_kept = (mass_before < top_p) & (head >= floor)
    # [R, 1], >= 1: the best token is always kept, even when top_p rounds to 0 in float32
    # (top_p = 5e-324 would otherwise keep nothing and gather index -1).
    num_kept = is_kept.sum(dim=-1, keepdim=True).clamp_(min=1)
    cutoff = head.gather(-1, num_kept - 1)
    # A token dropped inside the head means the nucleus ended there; otherwise it may
    # go on past the K-th token.
    return cutoff, num_kept.squeeze(1) < head.shape[-1]


def min_p_cutoff(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """logit_max + log(min_p) [R, 1]: p_j >= min_p * p_max exactly when logit_j is above it.

    logits [R, V]; min_p [R, 1], each in (0, 1]. The ratio of two probabilities does not
    change when earlier filters renormalise, so min-p needs no softmax.
    """
    return logits.amax(dim=-1, keepdim=True) + min_p.log()


def log_mass(logits: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """log sum exp of each row's logits >= cutoff [R, 1]: [R, 1]."""
    row_max = logits.amax(dim=-1, keepdim=True)
    return row_max + weights_(logits.clone(), cutoff).sum(dim=-1, keepdim=True).log()


def rows_of(logits: torch.Tensor, index: list[int] | torch.Tensor) -> torch.Tensor:
    """Rows `index` (sorted, distinct) of logits [R, V]: a copy, or logits itself if all."""
    if len(index) == logits.shape[0]:
        return logits
    return logits.index_select(0, torch.as_tensor(index, device=logits.device))


def column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """One value per row as a [r, 1] tensor that broadcasts over the vocabulary."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)
