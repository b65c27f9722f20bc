"""Start-up measurement of the target's step cost at a few token counts, for the policy."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from warpserve.spec_decode.adaptive import StepCost
from warpserve.spec_decode.batch import Chunk, build_inputs

NUM_TOKENS = (1, 2, 4, 8, 16, 32, 64)
NUM_REPEATS = 4  # the best of these counts: the policy compares sizes, noise flips it


@torch.inference_mode()
def measure_step_cost(
    model: nn.Module,
    kv_caches: list[torch.Tensor],
    block_size: int,
    decode_kernel: object,
    fused: Callable[..., torch.Tensor] | None = None,
) -> StepCost:
    """The best of NUM_REPEATS timed steps (after one warm-up) of each size in NUM_TOKENS:
    decode rows at short contexts, with logits for every row, as a verify step has.
    fused: the runner's fused decoder, if decode rows run through it (its cost curve is
    much flatter at few rows than the eager modules').

    Runs before any request: it writes K/V into the first blocks, which are free and
    rewritten before anyone reads them.
    """
    num_blocks = kv_caches[0].shape[1]
    max_context = min(4 * block_size, num_blocks * block_size)
    block_ids = list(range(-(-max_context // block_size)))
    seconds = []
    for num_tokens in NUM_TOKENS:
        chunks = [Chunk([0], i % max_context, block_ids) for i in range(num_tokens)]
        inputs = build_inputs(chunks, block_size, decode_kernel)
        seconds.append(_best_time(model, kv_caches, inputs, fused))
    # Noise must not make a bigger step look cheaper: keep the curve non-decreasing.
    for i in range(1, len(seconds)):
        seconds[i] = max(seconds[i], seconds[i - 1])
    return StepCost(NUM_TOKENS, tuple(seconds))


def _best_time(model: nn.Module, kv_caches: list[torch.Tensor], inputs, fused) -> float:
    meta = inputs.meta
    all_rows = torch.arange(len(inputs.input_ids))
    best = float("inf")
    for _ in range(NUM_REPEATS + 1):  # the first run warms up
        started = time.perf_counter()
        if fused is not None:
            fused(
                inputs.input_ids,
                inputs.positions,
                meta.slot_mapping,
                meta.decode_block_tables,
                meta.decode_context_lens,
                all_rows,
            )
        else:
            hidden = model(inputs.input_ids, inputs.positions, kv_caches, meta)
            model.compute_logits(hidden)
        best = min(best, time.perf_counter() - started)
    return best
