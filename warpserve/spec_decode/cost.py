"""Start-up measurement of the target's step cost (fixed + per token), for the policy."""

from __future__ import annotations

import time

import torch
from torch import nn

from warpserve.spec_decode.adaptive import StepCost
from warpserve.spec_decode.batch import MAX_DECODE_ROWS, Chunk, build_inputs

NUM_REPEATS = 3


@torch.inference_mode()
def measure_step_cost(
    model: nn.Module, kv_caches: list[torch.Tensor], block_size: int, decode_kernel: object
) -> StepCost:
    """Time steps of 1 and MAX_DECODE_ROWS tokens (the best of NUM_REPEATS each).

    Runs before any request: it writes K/V into the first blocks, which are free and
    rewritten before anyone reads them.
    """
    num_blocks = kv_caches[0].shape[1]
    num_tokens = min(MAX_DECODE_ROWS, num_blocks * block_size)
    block_ids = list(range(-(-num_tokens // block_size)))
    one = _best_time(model, kv_caches, Chunk([0], 0, block_ids), block_size, decode_kernel)
    many_chunk = Chunk([0] * num_tokens, 0, block_ids)
    many = _best_time(model, kv_caches, many_chunk, block_size, decode_kernel)
    per_token = max((many - one) / max(num_tokens - 1, 1), one * 1e-3)
    return StepCost(fixed_s=max(one - per_token, per_token), per_token_s=per_token)


def _best_time(
    model: nn.Module,
    kv_caches: list[torch.Tensor],
    chunk: Chunk,
    block_size: int,
    decode_kernel: object,
) -> float:
    inputs = build_inputs([chunk], block_size, decode_kernel)
    every_row = torch.arange(len(chunk.token_ids))
    best = float("inf")
    for _ in range(NUM_REPEATS + 1):  # the first run warms up
        started = time.perf_counter()
        hidden = model(inputs.input_ids, inputs.positions, kv_caches, inputs.meta)
        model.compute_logits(hidden[every_row])
        best = min(best, time.perf_counter() - started)
    return best
