"""How many intra-op threads each engine step runs on.

On 2 cores shared with the HTTP front end (event loop, SSE formatting) a step over a few
sequences is too small to split: the second thread mostly waits at the barriers of each
op, and any moment the front end takes on its core stalls the step. Steps over many
sequences have enough work per op to gain from both cores. Chosen from `warpserve bench
serve` runs against the in-process server at 1 and 2 threads; rerun them to re-check the
threshold (ModelConfig.few_seqs_max) on other hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from warpserve.config import ModelConfig


@dataclass(frozen=True)
class ThreadPolicy:
    many_seqs_num_threads: int  # all cores, or the user's explicit num_threads
    few_seqs_num_threads: int
    few_seqs_max: int  # steps over at most this many sequences use few_seqs_num_threads

    @classmethod
    def from_config(cls, config: ModelConfig, num_cores: int) -> ThreadPolicy:
        if config.num_threads is not None:  # the user's choice holds for every step
            return cls(config.num_threads, config.num_threads, 0)
        few = min(config.few_seqs_num_threads, num_cores)
        return cls(num_cores, few, config.few_seqs_max)

    def num_threads(self, num_seqs: int) -> int:
        if num_seqs <= self.few_seqs_max:
            return self.few_seqs_num_threads
        return self.many_seqs_num_threads


class ThreadSetter:
    """Applies a policy from the engine thread: torch's thread count is per calling
    thread under OpenMP, so the thread that runs the steps must set it."""

    def __init__(self, policy: ThreadPolicy) -> None:
        self.policy = policy
        self.current: int | None = None

    def before_step(self, num_seqs: int) -> None:
        wanted = self.policy.num_threads(num_seqs)
        if wanted != self.current:
            import torch

            torch.set_num_threads(wanted)
            self.current = wanted
