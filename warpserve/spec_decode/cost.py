"""Start-up measurement of the target's step cost at a few token counts, for the policy."""

from __future__ import annotations

import time

import torch

from warpserve.execution.executor import ModelExecutor
from warpserve.execution.inputs import Chunk
from warpserve.spec_decode.adaptive import StepCost

NUM_TOKENS = (1, 2, 4, 8, 16, 32, 64)
# Timed runs per size; the first also warms up, and the minimum drops it when it is the
# slow one. The best counts: the policy compares sizes, and noise flips the comparison.
NUM_RUNS = 5


@torch.inference_mode()
def measure_step_cost(target: ModelExecutor) -> StepCost:
    """The fastest of NUM_RUNS timed steps of each size in NUM_TOKENS: decode rows at short
    contexts, with logits for every row, as a verify step has, through the target's own
    executor (the fused decoder where decode rows run there: its cost curve is much
    flatter at few rows than the eager modules'). A step includes building its inputs.

    Runs before any request: it writes K/V into the first blocks, which are free and
    rewritten before anyone reads them.
    """
    block_size = target.block_size
    max_context = min(4 * block_size, target.num_blocks * block_size)
    block_ids = list(range(-(-max_context // block_size)))
    seconds = []
    for num_tokens in NUM_TOKENS:
        chunks = [Chunk([0], i % max_context, block_ids, True) for i in range(num_tokens)]
        seconds.append(_best_time(target, chunks))
    # Noise must not make a bigger step look cheaper: keep the curve non-decreasing.
    for i in range(1, len(seconds)):
        seconds[i] = max(seconds[i], seconds[i - 1])
    return StepCost(NUM_TOKENS, tuple(seconds))


def _best_time(target: ModelExecutor, chunks: list[Chunk]) -> float:
    best = float("inf")
    for _ in range(NUM_RUNS):
        started = time.perf_counter()
        target.logits(chunks)
        best = min(best, time.perf_counter() - started)
    return best
