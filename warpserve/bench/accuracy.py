"""`warpserve bench accuracy`: perplexity of fp32 vs each quantization scheme on
WikiText-2, through the accuracy gate (quant/perplexity.py).

    warpserve bench accuracy [--text wikitext2-valid.txt] [--num-windows 8]
        [--schemes int8 w8a8 int8-mixed int4 int4@g64 int4-all] [--window-tokens 512]
        [--out bench_results/accuracy.json]

Scheme specs: see build_variant; e.g. "int4@g64", "int4@sym", "w8a8~*down_proj", and
"int4-all" for int4 on every layer including the LM head (the "int4" preset keeps it int8).
Until the native Llama lands this runs Transformers' LlamaForCausalLM, loaded from the
bundled GGUF (dequantized to fp32); nn.Linear swaps the same way in both.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from warpserve.quant import (
    EvalConfig,
    Int4WeightOnlyLinear,
    gate,
    load_token_ids,
    module_logits_fn,
    perplexity,
    quantize_model,
)

DEFAULT_SCHEMES = ("int8", "w8a8", "int8-mixed", "int4", "int4@g64", "int4-all")


def load_hf_gguf_model(
    name: str = "smollm2-135m-instruct",
) -> tuple[nn.Module, Callable[[str], list[int]]]:
    """(fp32 model in eval mode, encode function) from a bundled or local .gguf file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from warpserve.weights.registry import resolve_model_path

    path = resolve_model_path(name)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), lambda text: tokenizer.encode(text, add_special_tokens=False)


def build_variant(model: nn.Module, spec: str) -> tuple[nn.Module, str]:
    """A quantized deep copy of `model` per scheme spec, and the budget's scheme name.

    spec: "int4-all", or SCHEME[@gN][@sym][~PATTERN]: group size N, symmetric int4, and the
    layers matching PATTERN kept at int8 weight-only (e.g. "w8a8~*down_proj")."""
    variant = copy.deepcopy(model)
    if spec == "int4-all":
        quantize_model(variant, "int4", exclude=["lm_head"])
        head = variant.get_submodule("lm_head")
        if not isinstance(head, nn.Linear):
            raise ValueError(f"int4-all needs an nn.Linear lm_head, found {type(head).__name__}")
        variant.set_submodule("lm_head", Int4WeightOnlyLinear.from_linear(head))
        return variant, "int4"
    spec, _, int8_pattern = spec.partition("~")
    scheme, *options = spec.split("@")
    group_size = next((int(o[1:]) for o in options if o.startswith("g")), 32)
    if int8_pattern:  # swapped first: quantize_model then skips them (no longer nn.Linear)
        quantize_model(variant, "int8", include=[int8_pattern])
    quantize_model(variant, scheme, group_size=group_size, symmetric="sym" in options)
    return variant, scheme


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--text", default=None, help="evaluation text (default WikiText-2)")
    parser.add_argument("--schemes", nargs="+", default=list(DEFAULT_SCHEMES))
    parser.add_argument("--num-windows", type=int, default=8)
    parser.add_argument("--window-tokens", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="bench_results/accuracy.json")


def run(args: argparse.Namespace) -> int:
    from warpserve.bench.datasets import find_text
    from warpserve.bench.report import environment, write_json

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = EvalConfig(args.num_windows, args.window_tokens, args.seed)
    model, encode = load_hf_gguf_model(args.model)
    token_ids = load_token_ids(find_text(args.text), encode)
    reference = perplexity(module_logits_fn(model), token_ids, config)
    print(f"fp32: perplexity {reference.perplexity:.4f} on {reference.num_scored_tokens} tokens")
    reports = []
    for spec in args.schemes:
        variant, scheme = build_variant(model, spec)
        start = time.perf_counter()
        result = perplexity(module_logits_fn(variant), token_ids, config)
        seconds = time.perf_counter() - start
        report = gate(scheme, reference, result, force=True)
        print(f"[{spec}] {report.summary()}; {seconds:.1f} s", flush=True)
        reports.append({"spec": spec, "seconds": seconds, **asdict(report)})
    payload = {
        "environment": environment(),
        "config": vars(args),
        "eval": asdict(config),
        "reports": reports,
    }
    print(f"wrote {write_json(args.out, payload)}")
    return 0
