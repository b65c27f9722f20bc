"""Latency and throughput of several backends, measured side by side.

The machine is shared and its load moves on a scale of seconds, so whole-run rounds
(A then B then C) measure the load as much as the variants. Instead the work is cut into
pieces (a batch, a chunk of texts); every system runs each piece back to back, in an
order that rotates, and keeps its fastest time per piece over the rounds. A burst of
outside load then lands on all systems alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from warpserve.encoder.offline import length_sorted_batches
from warpserve.encoder.session import EncoderBackend
from warpserve.encoder.tokens import EncodedText, collate

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    throughput: float  # texts/s at the batch size, tokenization excluded
    latency_p50_ms: float  # one text per call
    latency_p99_ms: float


def interleaved_piecewise(
    systems: Mapping[str, Callable[[T], object]], pieces: list[T], rounds: int
) -> dict[str, float]:
    """Per system, seconds for all pieces: the sum over pieces of its fastest run."""
    names = list(systems)
    best = {name: [float("inf")] * len(pieces) for name in names}
    for name in names:
        systems[name](pieces[0])  # warm-up: first-call allocations, thread pools
    for round_index in range(rounds):
        for index, piece in enumerate(pieces):
            shift = (index + round_index) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                systems[name](piece)
                best[name][index] = min(best[name][index], time.perf_counter() - start)
    return {name: float(sum(times)) for name, times in best.items()}


def single_text_latencies(
    backends: dict[str, EncoderBackend],
    encoded: list[EncodedText],
    pad_id: int,
    input_names: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """Per backend, milliseconds for each text run alone, texts interleaved across backends."""
    samples: dict[str, list[float]] = {name: [] for name in backends}
    for item in encoded:
        inputs = collate([item], pad_id, input_names)
        for name, backend in backends.items():
            start = time.perf_counter()
            backend.run(inputs)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: np.asarray(values) for name, values in samples.items()}


def time_backends(
    backends: dict[str, EncoderBackend],
    throughput_set: list[EncodedText],
    latency_set: list[EncodedText],
    pad_id: int,
    input_names: tuple[str, ...],
    rounds: int = 3,
    batch_size: int = 32,
) -> dict[str, Timing]:
    batches = [
        collate([throughput_set[i] for i in batch], pad_id, input_names)
        for batch in length_sorted_batches(throughput_set, batch_size)
    ]
    runners = {name: backend.run for name, backend in backends.items()}
    seconds = interleaved_piecewise(runners, batches, rounds)
    latencies = single_text_latencies(backends, latency_set, pad_id, input_names)
    return {
        name: Timing(
            throughput=len(throughput_set) / seconds[name],
            latency_p50_ms=float(np.percentile(latencies[name], 50)),
            latency_p99_ms=float(np.percentile(latencies[name], 99)),
        )
        for name in backends
    }
