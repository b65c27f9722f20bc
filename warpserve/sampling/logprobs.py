"""Log-probabilities returned to the user.

They come from the model's raw distribution, log_softmax of the unprocessed logits, as
vLLM returns them by default: temperature, penalties, logit_bias and the truncation
filters change which token is drawn, not the logprobs reported for it. So a chosen
token's logprob is always finite, even where top-k would give it zero probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# (the chosen token's logprob, its top alternatives as (token id, logprob), best first)
TokenLogprobs = tuple[float, list[tuple[int, float]]]


def compute_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, num_top: Sequence[int]
) -> list[TokenLogprobs]:
    """Logprobs of the chosen tokens and each row's `num_top[i]` best alternatives.

    logits [L, V] float32, unprocessed; token_ids [L] long, the tokens chosen. Ties in
    the top list are ordered by token id, so the list is deterministic.
    """
    logprobs = torch.log_softmax(logits, dim=-1)  # [L, V]
    chosen = logprobs.gather(-1, token_ids.unsqueeze(1)).squeeze(1).tolist()  # [L]
    max_top = min(max(num_top, default=0), logits.shape[-1])  # a tiny vocab has fewer
    if max_top == 0:
        return [(lp, []) for lp in chosen]
    values, indices = logprobs.topk(max_top, dim=-1)  # [L, max_top], descending
    results = []
    for lp, ids, vals, n in zip(chosen, indices.tolist(), values.tolist(), num_top, strict=True):
        top = sorted(zip(ids[:n], vals[:n], strict=True), key=lambda pair: (-pair[1], pair[0]))
        results.append((lp, top))
    return results
