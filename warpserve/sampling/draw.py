"""One random token per row by inverse-CDF sampling, in two levels.

Row r returns the first token, in token-id order, whose cumulative probability exceeds
uniforms[r]. Tokens below the row's truncation cutoff, and -inf logits, have probability
zero and are never returned.

Why two levels: a float64 cumulative sum over the whole vocabulary allocates and writes
B x V doubles, which costs more than everything else in sampling. Instead the vocabulary
is cut into blocks of BLOCK_SIZE tokens: the block is found from a cumulative sum of the
block masses ([B, V / BLOCK_SIZE]), then the token from a cumulative sum inside that one
block ([B, BLOCK_SIZE]). Block masses are float32 sums of at most BLOCK_SIZE weights,
so each token's probability is exact to about 1e-6 relative; inside a block the sums run
in float64, so a rare token next to a likely one keeps its own probability.
"""

from __future__ import annotations

import torch

BLOCK_SIZE = 256  # about sqrt(V) for V ~ 50k: both levels stay small

# exp() below this is slow on CPU: underflowing and subnormal results take a slow path
# (20-50x). A weight of exp(-80) = 1.8e-35 is invisible next to the best token's 1, so
# lower logits are raised to it: at most V * 1.8e-35 of probability moves.
EXP_FLOOR = -80.0

# The largest float64 below 1: a fraction that must stay inside [0, 1).
_BELOW_ONE = 1.0 - 2.0**-53


def weights_(logits: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
    """In place: logits [R, V] become exp(logit - row max) where logit >= cutoff [R, 1]
    and is finite, 0 elsewhere. Returns logits."""
    # The lowest finite float as a floor on the cutoff also drops -inf logits.
    drop = logits < cutoff.clamp(min=torch.finfo(logits.dtype).min)  # [R, V] bool
    logits.sub_(logits.amax(dim=-1, keepdim=True)).clamp_(min=EXP_FLOOR).exp_()
    return logits.masked_fill_(drop, 0.0)


def sample_from_logits(
    logits: torch.Tensor,
    uniforms: torch.Tensor,
    cutoff: torch.Tensor | None = None,
    block_size: int = BLOCK_SIZE,
) -> torch.Tensor:
    """Token ids [R] long drawn from softmax(logits [R, V]) restricted to logits >= cutoff.

    uniforms [R] float64 in [0, 1); cutoff [R, 1] (None: keep every finite logit).
    `logits` is overwritten with the unnormalised probabilities, to save a B x V buffer.
    """
    vocab_size = logits.shape[-1]
    if cutoff is None:
        cutoff = torch.full((logits.shape[0], 1), float("-inf"), device=logits.device)
    weights = weights_(logits, cutoff)  # [R, V], best = 1
    block_mass = _block_sums(weights, block_size)  # [R, NB] float64
    block_cdf = block_mass.cumsum(dim=-1)
    block = _invert(block_cdf, uniforms.unsqueeze(1))  # [R, 1]
    # Where in the chosen block the draw lands, as a fraction of the block's mass.
    mass = block_mass.gather(-1, block)
    fraction = uniforms.unsqueeze(1) * block_cdf[:, -1:] - (block_cdf.gather(-1, block) - mass)
    fraction = (fraction / mass).clamp_(0.0, _BELOW_ONE)
    inner = _block_weights(weights, block, block_size)  # [R, block_size] float64
    offset = _invert(inner.cumsum(dim=-1), fraction)  # [R, 1]
    # Only a degenerate row (every logit -inf or NaN) can point past the vocabulary.
    return (block * block_size + offset).squeeze(1).clamp_max_(vocab_size - 1)


def _invert(cdf: torch.Tensor, fraction: torch.Tensor) -> torch.Tensor:
    """Index [R, 1] of the first entry of cdf [R, N] above fraction [R, 1] of its total.

    The target is kept strictly below the total (u * total can round up to it), so the
    entry found always has positive mass.
    """
    total = cdf[:, -1:]
    target = torch.minimum(fraction * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).clamp_max_(cdf.shape[-1] - 1)


def _block_sums(weights: torch.Tensor, block_size: int) -> torch.Tensor:
    """Mass of each block of block_size tokens, the last one possibly shorter: [R, NB] float64."""
    num_rows, vocab_size = weights.shape
    num_full = vocab_size // block_size
    # A view, no copy: each row's first num_full * block_size weights, block by block.
    full = weights[:, : num_full * block_size].reshape(num_rows, num_full, block_size)
    sums = full.sum(dim=-1)  # [R, num_full]; float32: a float64 sum would copy all of V
    if vocab_size % block_size:
        tail = weights[:, num_full * block_size :].sum(dim=-1, keepdim=True)
        sums = torch.cat([sums, tail], dim=-1)
    return sums.double()


def _block_weights(weights: torch.Tensor, block: torch.Tensor, block_size: int) -> torch.Tensor:
    """Each row's weights in its chosen block [R, 1]: [R, block_size] float64, 0 past V."""
    vocab_size = weights.shape[-1]
    token_ids = block * block_size + torch.arange(block_size, device=weights.device)
    inside = token_ids < vocab_size
    picked = weights.gather(-1, token_ids.clamp_max(vocab_size - 1))
    return picked.masked_fill_(~inside, 0.0).double()
