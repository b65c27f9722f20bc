"""Verification of k draft tokens against the target's k + 1 distributions.

Greedy (temperature 0): accept drafts while each equals the target's argmax at its
position; the first mismatch is replaced by the target's argmax, and if all k match, the
target's argmax after the last one is added. The output is exactly the target's greedy
output, token for token.

Sampling (Leviathan et al. 2023, Chen et al. 2023): draft x_i was drawn from q_i; the
target's distribution at that position is p_i.
  - accept x_i with probability min(1, p_i(x_i) / q_i(x_i));
  - on the first rejection, draw the replacement from the residual
    norm(max(0, p_i - q_i)) and stop;
  - if all k are accepted, draw one more token from p_k.
Each emitted token is then distributed exactly as p_i, whatever q is. A deterministic
proposal (n-gram lookup, greedy draft) is q_i = one-hot(x_i): accept with probability
p_i(x_i), and the residual is p_i without x_i.
"""

from __future__ import annotations

import torch


def verify_greedy(target_token_ids: list[int], draft_token_ids: list[int]) -> list[int]:
    """target_token_ids: the target's choice at each of the k + 1 positions."""
    for i, draft_id in enumerate(draft_token_ids):
        if draft_id != target_token_ids[i]:
            return [*draft_token_ids[:i], target_token_ids[i]]
    return [*draft_token_ids, target_token_ids[len(draft_token_ids)]]


def verify_sampled(
    target_probs: torch.Tensor,
    draft_token_ids: list[int],
    draft_probs: torch.Tensor | None,
    generator: torch.Generator | None,
) -> list[int]:
    """target_probs [k + 1, V] (rows sum to 1); draft_probs [k, V] or None (one-hot)."""
    num_drafts = len(draft_token_ids)
    drafts = torch.tensor(draft_token_ids, dtype=torch.long)
    p = target_probs[:num_drafts].gather(1, drafts[:, None]).squeeze(1).double()  # [k]
    if draft_probs is None:
        q = torch.ones_like(p)
    else:
        q = draft_probs.gather(1, drafts[:, None]).squeeze(1).double()  # [k]
    u = torch.rand(num_drafts, generator=generator, dtype=torch.float64)
    # accept x_i  <=>  u_i < p_i(x_i) / q_i(x_i)  (q_i(x_i) > 0: x_i was drawn from q_i)
    rejected = (u * q >= p).nonzero()
    if len(rejected) == 0:
        bonus = _draw(target_probs[num_drafts], generator)
        return [*draft_token_ids, bonus]
    i = int(rejected[0])
    q_i = None if draft_probs is None else draft_probs[i]
    residual = _residual(target_probs[i], draft_token_ids[i], q_i)
    return [*draft_token_ids[:i], _draw(residual, generator)]


def _residual(p: torch.Tensor, draft_id: int, q: torch.Tensor | None) -> torch.Tensor:
    """max(0, p - q), unnormalised; q None means one-hot at draft_id."""
    if q is None:
        residual = p.clone()
        residual[draft_id] = 0.0
    else:
        residual = (p - q).clamp_(min=0.0)
    if float(residual.sum()) <= 0.0:
        # Only reachable through rounding (a rejection implies p(x) < q(x), so some
        # other token has p > q): fall back to p itself.
        return p
    return residual


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from unnormalised non-negative weights [V]."""
    return int(torch.multinomial(weights.float(), 1, generator=generator))
