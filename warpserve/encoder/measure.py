"""Latency and throughput of several backends, measured side by side.

The machine is shared, so variants are timed in interleaved rounds (A B C A B C ...) and
each keeps its best round: a burst of outside load then hits every variant alike instead
of whichever happened to run during it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from warpserve.encoder.offline import run_encoded
from warpserve.encoder.session import EncoderBackend
from warpserve.encoder.tokens import EncodedText, collate


@dataclass(frozen=True)
class Timing:
    throughput: float  # texts/s at the batch size, tokenization excluded
    latency_p50_ms: float  # one text per call
    latency_p99_ms: float


def interleaved_best(jobs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Seconds of each job's fastest run over `rounds` interleaved rounds (after a warm-up)."""
    best = {name: float("inf") for name in jobs}
    for job in jobs.values():
        job()
    for _ in range(rounds):
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


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
    jobs = {
        name: (lambda b=backend: run_encoded(b, throughput_set, pad_id, input_names, batch_size))
        for name, backend in backends.items()
    }
    seconds = interleaved_best(jobs, rounds)
    latencies = single_text_latencies(backends, latency_set, pad_id, input_names)
    return {
        name: Timing(
            throughput=len(throughput_set) / seconds[name],
            latency_p50_ms=float(np.percentile(latencies[name], 50)),
            latency_p99_ms=float(np.percentile(latencies[name], 99)),
        )
        for name in backends
    }
