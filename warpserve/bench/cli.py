"""`warpserve bench <name>`: each benchmark is a module with add_arguments(parser) and run(args)."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS: dict[str, str] = {
    "throughput": "offline engine throughput against Transformers generate",
    "serve": "load test of an OpenAI-compatible server",
    "embed": "embedding throughput and latency against sentence-transformers",
    "ladder": "the optimization ladder from naive Transformers to fully optimized",
    "spec": "speculative decoding (n-gram, auto, draft, layer skip) against plain decoding",
    "decode-step": "one decode step: eager modules against the fused C++ kernel, per format",
    "llamacpp": "llama.cpp (the bench extra) on a GGUF: one stream and N sequences per type",
    "soak": "a mixed load with hang-ups, slow readers and an engine stall; pass/fail",
    "kernels": "every quantized-matmul kernel against fp32 nn.Linear, per layer shape",
    "accuracy": "perplexity of fp32 and each quantization scheme on WikiText-2, gated",
    "structured": "structured output: all, half and none of the requests JSON-constrained",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    for name, help_text in BENCHMARKS.items():
        module = f"warpserve.bench.{name.replace('-', '_')}"
        # Bench modules import their heavy dependencies inside run(), so this stays cheap.
        importlib.import_module(module).add_arguments(subparsers.add_parser(name, help=help_text))


def run(args: argparse.Namespace) -> int:
    module = f"warpserve.bench.{args.benchmark.replace('-', '_')}"
    return int(importlib.import_module(module).run(args) or 0)
