"""`warpserve generate`: stream one completion to the terminal, then a one-line summary."""

from __future__ import annotations

import argparse
import sys
import time

from warpserve.config import add_engine_arguments, engine_config_from_args
from warpserve.engine.llm_engine import LLMEngine
from warpserve.request import SamplingParams
from warpserve.weights.registry import DEFAULT_DECODER

DEMO_PROMPT = "Explain in two sentences why the sky is blue."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", default=DEMO_PROMPT)
    parser.add_argument("--model", default=DEFAULT_DECODER, help="bundled name, folder or .gguf")
    parser.add_argument("--chat", action="store_true", help="apply the model's chat template")
    parser.add_argument("--system", default=None, help="system message (with --chat)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    add_engine_arguments(parser)
    parser.set_defaults(kv_cache_gib=0.5)  # one request needs little


def run(args: argparse.Namespace) -> int:
    params = SamplingParams(
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
    )
    engine = LLMEngine.from_config(engine_config_from_args(args))
    prompt = args.prompt
    if args.chat:
        messages = [{"role": "system", "content": args.system}] if args.system else []
        messages.append({"role": "user", "content": args.prompt})
        prompt = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    _stream(engine, prompt, params)
    return 0


def _stream(engine: LLMEngine, prompt: str, params: SamplingParams) -> None:
    started = time.perf_counter()
    engine.add_request("cli", prompt, params)
    printed = 0
    output = None
    while engine.has_unfinished_requests():
        for output in engine.step():
            text = output.outputs[0].text
            sys.stdout.write(text[printed:])
            sys.stdout.flush()
            printed = len(text)
    assert output is not None
    elapsed = time.perf_counter() - started
    ttft = output.metrics.time_to_first_token or 0.0
    num_generated = len(output.outputs[0].token_ids)
    decode_s = max(elapsed - ttft, 1e-9)
    rate = (num_generated - 1) / decode_s if num_generated > 1 else 0.0
    print(
        f"\n[prompt tokens: {len(output.prompt_token_ids)}, generated tokens: {num_generated}, "
        f"time to first token: {ttft * 1000:.0f} ms, decode: {rate:.1f} tokens/s, "
        f"finish: {output.outputs[0].finish_reason.value if output.outputs[0].finish_reason else '-'}]",
        file=sys.stderr,
    )
