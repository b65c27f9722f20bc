"""`warpserve bench embed`: warpserve's embedding service against sentence-transformers.

One run, one seeded workload, both systems in the same process with the same threads:
- short: N WikiText cuts of 8-64 words, sentences/s at batch 32 (sentence-transformers'
  own `encode` with batch_size 32, which also sorts by length; warpserve's service, as it
  serves: its batcher groups by token count into forward passes of at most 32 rows and
  its token budget, `BatcherConfig.max_batch_tokens`), both given the same chunks of
  `--chunk` texts, interleaved chunk by chunk, the fastest of `--rounds` kept per chunk;
- long: M cuts of exactly `--long-tokens` tokens (about 256), same measure;
- batch 1: p50 / p99 latency of single-sentence calls, systems interleaved per sentence;
- accuracy: Spearman correlation with the gold scores of STS-B dev (all pairs by default)
  for every system, and the cosine of each system's embeddings with sentence-transformers'
  on those sentences (mean and minimum).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="all-minilm-l6-v2")
    parser.add_argument("--variant", help="warpserve variant (default: the optimize report's)")
    parser.add_argument("--also", default="", help="comma-separated extra variants to time")
    parser.add_argument("--num-texts", type=int, default=1000, help="short texts, 8-64 words")
    parser.add_argument("--num-long-texts", type=int, default=200)
    parser.add_argument("--long-tokens", type=int, default=254, help="plus [CLS] and [SEP]")
    parser.add_argument("--num-latency-texts", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--chunk", type=int, default=256, help="texts per interleaved piece (each sorted alone)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, help="encoder artifact cache")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument(
        "--num-sts-pairs", type=int, default=None, help="STS-B dev pairs (default: all)"
    )
    parser.add_argument("--out", default="bench_results/embed.json")


def run(args: argparse.Namespace) -> int:
    from warpserve.bench.report import environment, write_json
    from warpserve.encoder.report import machine_info

    texts = _workloads(args)
    systems = _start_systems(args)
    try:
        results = {name: {"throughput_short": None, "throughput_long": None} for name in systems}
        short, long = texts["short"], texts["long"]
        _time_throughput(systems, short, "throughput_short", results, args.rounds, args.chunk)
        if not args.skip_long:
            _time_throughput(systems, long, "throughput_long", results, args.rounds, args.chunk)
        _time_latency(systems, texts["short"][: args.num_latency_texts], results)
        agreement = _sts_accuracy(systems, args.num_sts_pairs, results)
    finally:
        for system in systems.values():
            system.close()
    payload = {
        "benchmark": "embed",
        "config": {k: str(v) for k, v in vars(args).items() if k != "func"},
        "environment": {**environment(), **machine_info()},
        "workload": {name: _describe(values) for name, values in texts.items()},
        "results": results,
        "agreement_with_sentence_transformers": agreement,
    }
    out = write_json(args.out, payload)
    print(render_table(payload))
    print(f"wrote {out}")
    return 0


REFERENCE = "sentence-transformers fp32"


class _SentenceTransformers:
    def __init__(self, path: Path, batch_size: int, num_threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(num_threads)
        self.model = SentenceTransformer(str(path), device="cpu")
        self.batch_size = batch_size

    def encode(self, texts: list[str]):  # noqa: ANN201 - [N, D] normalized
        return self.model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )

    def close(self) -> None:
        pass


class _Warpserve:
    """The serving path: tokenizer pool, dynamic batcher, the chosen variant."""

    def __init__(self, args: argparse.Namespace, variant: str | None) -> None:
        from warpserve.encoder.config import BatcherConfig, ServiceConfig
        from warpserve.encoder.service import EmbeddingService

        batcher = BatcherConfig(
            max_batch_size=args.batch_size,
            max_queued_texts=1_000_000,  # whole workloads (all of STS-B: 3,000) go in at once
        )
        # no tokenizer cache: rounds repeat the same texts, and sentence-transformers has none
        config = ServiceConfig(
            num_threads=args.threads, variant=variant, tokenizer_cache_bytes=0, batcher=batcher
        )
        self.service = EmbeddingService.start(args.model, "embed", config, args.cache_dir)
        self._loop = asyncio.new_event_loop()

    def encode(self, texts: list[str]):  # noqa: ANN201 - [N, D] normalized
        import numpy as np

        vectors, _ = self._loop.run_until_complete(self.service.embed(texts))
        return np.asarray(vectors, dtype=np.float32)

    def close(self) -> None:
        self.service.close()
        self._loop.close()


def _start_systems(args: argparse.Namespace) -> dict[str, _SentenceTransformers | _Warpserve]:
    from warpserve.weights.registry import resolve_model_path

    systems: dict[str, _SentenceTransformers | _Warpserve] = {
        REFERENCE: _SentenceTransformers(
            resolve_model_path(args.model), args.batch_size, args.threads
        )
    }
    main = _Warpserve(args, args.variant)
    systems[f"warpserve {main.service.variant}"] = main
    for variant in filter(None, args.also.split(",")):
        systems[f"warpserve {variant}"] = _Warpserve(args, variant)
    return systems


def _workloads(args: argparse.Namespace) -> dict[str, list[str]]:
    from warpserve.encoder.data import sample_sentences
    from warpserve.weights.registry import resolve_model_path

    short = sample_sentences(args.num_texts, 8, 64, seed=args.seed)
    cuts = sample_sentences(args.num_long_texts, 300, 320, seed=args.seed + 1)
    long = [_first_tokens(resolve_model_path(args.model), c, args.long_tokens) for c in cuts]
    return {"short": short, "long": long}


def _first_tokens(model_dir: Path, text: str, num_tokens: int) -> str:
    """The prefix of `text` that tokenizes to exactly num_tokens (special tokens aside)."""
    tokenizer = _tokenizer(model_dir)
    offsets = tokenizer.encode(text, add_special_tokens=False).offsets
    return text[: offsets[min(num_tokens, len(offsets)) - 1][1]]


_TOKENIZERS: dict[Path, object] = {}


def _tokenizer(model_dir: Path):  # noqa: ANN202 - a tokenizers.Tokenizer
    if model_dir not in _TOKENIZERS:
        from transformers import AutoTokenizer

        _TOKENIZERS[model_dir] = AutoTokenizer.from_pretrained(model_dir).backend_tokenizer
    return _TOKENIZERS[model_dir]


def _describe(texts: list[str]) -> dict:
    words = [len(t.split()) for t in texts]
    return {"num_texts": len(texts), "min_words": min(words), "max_words": max(words)}


def _time_throughput(
    systems: dict, texts: list[str], key: str, results: dict, rounds: int, chunk: int
) -> None:
    """Chunks of texts, each run by every system back to back (order rotating), fastest
    time per chunk kept: outside load then hits both systems alike (measure.py)."""
    from warpserve.encoder.measure import interleaved_piecewise

    chunks = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    runners = {name: system.encode for name, system in systems.items()}
    seconds = interleaved_piecewise(runners, chunks, rounds)
    for name in systems:
        results[name][key] = len(texts) / seconds[name]
        logger.info("%s %s: %.1f texts/s", name, key, results[name][key])


def _time_latency(systems: dict, texts: list[str], results: dict) -> None:
    from warpserve.bench.report import percentiles

    samples: dict[str, list[float]] = {name: [] for name in systems}
    for text in texts:
        for name, system in systems.items():
            start = time.perf_counter()
            system.encode([text])
            samples[name].append((time.perf_counter() - start) * 1e3)
    for name, values in samples.items():
        results[name]["latency_ms"] = percentiles(values, (50, 99))


def _sts_accuracy(
    systems: dict, num_pairs: int | None, results: dict
) -> dict[str, dict[str, float]]:
    """Spearman on STS-B dev per system (into results); cosines with the reference."""
    import numpy as np

    from warpserve.encoder.data import read_sts
    from warpserve.encoder.validate import pair_scores, spearman

    pairs = read_sts(limit=num_pairs)
    texts = [p.first for p in pairs] + [p.second for p in pairs]
    gold = np.asarray([p.score for p in pairs])
    vectors = {name: system.encode(texts) for name, system in systems.items()}
    for name, rows in vectors.items():
        results[name]["sts_spearman"] = spearman(pair_scores(rows, len(pairs), "embed"), gold)
    agreement = {}
    for name, rows in vectors.items():
        if name != REFERENCE:
            cosines = (rows * vectors[REFERENCE]).sum(axis=1)
            agreement[name] = {
                "num_texts": len(texts),
                "mean_cosine": float(cosines.mean()),
                "min_cosine": float(cosines.min()),
            }
    return agreement


def render_table(payload: dict) -> str:
    results = payload["results"]
    reference = results[REFERENCE]
    lines = [
        "| system | short sent/s | x ST | long sent/s | x ST | b1 p50 ms | b1 p99 ms "
        "| ST p50 / p50 | STS-B Spearman | drop |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results.items():
        lines.append(
            f"| {name} | {_num(row['throughput_short'])} "
            f"| {_ratio(row['throughput_short'], reference['throughput_short'])} "
            f"| {_num(row['throughput_long'])} "
            f"| {_ratio(row['throughput_long'], reference['throughput_long'])} "
            f"| {row['latency_ms']['p50']:.2f} | {row['latency_ms']['p99']:.2f} "
            f"| {_ratio(reference['latency_ms']['p50'], row['latency_ms']['p50'])} "
            f"| {row['sts_spearman']:.4f} "
            f"| {reference['sts_spearman'] - row['sts_spearman']:.4f} |"
        )
    for name, agreement in payload["agreement_with_sentence_transformers"].items():
        lines.append(
            f"\n{name} vs sentence-transformers on {agreement['num_texts']} STS-B texts: "
            f"cosine mean {agreement['mean_cosine']:.4f}, min {agreement['min_cosine']:.4f}"
        )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _ratio(value: float | None, reference: float | None) -> str:
    return "n/a" if value is None or not reference else f"{value / reference:.2f}"
