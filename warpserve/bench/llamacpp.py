"""llama.cpp on the same GGUF, through llama-cpp-python's low-level API (the `bench` extra).

Two measurements, greedy, on the caller's token ids (same tokenizer: the GGUF's own):
  - single stream: one request at a time; prompt processing is timed apart (TTFT) and
    decode tokens/s counts the tokens after the first over the decode time;
  - N sequences decoded together: one context with n_seq_max = N, one sequence id per
    request, prompts then one token per sequence per `llama_decode`; aggregate generated
    tokens/s end to end, prompt processing included.
Each for Q4_0, Q4_1 and Q8_0: variants the source GGUF is not are made with llama.cpp's
own quantizer (`llama_model_quantize`, allow_requantize) into the warpserve cache dir, so
from a Q4_1 file the Q4_0 and Q8_0 files are requantized from Q4_1, not from the original
weights. Perplexity on the ladder's windows, scored like `quant.perplexity`, comes with it.
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from warpserve.bench.report import percentiles

logger = logging.getLogger(__name__)

# GGUF general.file_type / llama_ftype values
QUANT_TYPES: dict[str, int] = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7}
INSTALL_HINT = "pip install 'warpserve[bench]' (llama-cpp-python[server])"

_log_callback = None  # kept alive: llama.cpp holds the pointer


def unavailable_reason() -> str | None:
    """Why llama.cpp rows cannot run here, or None when they can."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as exc:  # the optional extra is not installed
        return f"llama-cpp-python is not installed ({exc}); {INSTALL_HINT}"
    return None


def _lib():
    global _log_callback
    import llama_cpp

    if _log_callback is None:

        @llama_cpp.llama_log_callback
        def _quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            if level == 3:  # GGML_LOG_LEVEL_ERROR
                logger.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

        _log_callback = _quiet
        llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
    return llama_cpp


# -- `warpserve bench llamacpp`: the same measurements on their own -----------------------


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="smollm2-135m-instruct", help="a GGUF file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-requests", type=int, default=32, help="sequences together")
    parser.add_argument("--single-stream-requests", type=int, default=4)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--types", default=",".join(QUANT_TYPES))
    parser.add_argument("--prompts", choices=("grounded", "wikitext"), default="grounded")
    parser.add_argument("--prompt-len", default="100:300", help="LOW:HIGH tokens (wikitext)")
    parser.add_argument("--text", default=None, help="prompt source (default WikiText-2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_results/llamacpp.json")


def run(args) -> int:
    from warpserve.bench import report
    from warpserve.bench.ladder_rungs import build_prompts
    from warpserve.weights.loader import open_model_source

    reason = unavailable_reason()
    if reason is not None:
        print(f"llama.cpp bench skipped: {reason}")
        return 1
    source = open_model_source(args.model)
    if source.path.suffix != ".gguf":
        print(f"llama.cpp bench needs a GGUF file, not {source.path}")
        return 1
    prompts = build_prompts(args, source.load_tokenizer())
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    per_type = measure(
        source.path, prompts[: args.single_stream_requests], prompts, args.output_len,
        args.threads, types=types,
    )  # fmt: skip
    results = {"environment": report.environment(), "config": vars(args), "per_type": per_type}
    path = report.write_json(args.out, _without_token_ids(results))
    for name, r in per_type.items():
        print(
            f"{name}: {r['single']['decode_tokens_per_s']:.1f} decode tok/s (1 seq), "
            f"{r['batched']['generated_tokens_per_s']:.1f} tok/s ({len(prompts)} seqs)"
        )
    print(f"wrote {path}")
    return 0


def _without_token_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_token_ids(v) for k, v in value.items() if k != "token_ids"}
    return value


# -- GGUF variants ----------------------------------------------------------------------


def source_type(gguf: Path) -> str | None:
    """The GGUF's quantization type name (Q4_0, Q4_1, Q8_0), or None for another type."""
    from warpserve.weights.gguf_file import read_gguf

    file_type = read_gguf(gguf).metadata.get("general.file_type")
    return next((name for name, value in QUANT_TYPES.items() if value == file_type), None)


def prepare_variants(gguf: Path, types: list[str], out_dir: Path, threads: int) -> dict[str, dict]:
    """{type: {"path", "requantized_from", "size_mb"}}; missing ones made once and cached."""
    source = source_type(gguf)
    variants = {}
    for name in types:
        if name == source:
            path, origin = gguf, None
        else:
            stem = gguf.stem.removesuffix(f".{source}") if source else gguf.stem
            path, origin = out_dir / f"{stem}.{name}.gguf", source or "source"
            if not path.exists():
                _quantize(gguf, path, QUANT_TYPES[name], threads)
        variants[name] = {
            "path": str(path),
            "requantized_from": origin,
            "size_mb": path.stat().st_size / 1e6,
        }
    return variants


def _quantize(source: Path, target: Path, ftype: int, threads: int) -> None:
    llama_cpp = _lib()
    target.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = threads
    partial = target.with_suffix(".partial")
    logger.info("llama.cpp: quantizing %s -> %s", source.name, target.name)
    if llama_cpp.llama_model_quantize(
        str(source).encode(), str(partial).encode(), ctypes.byref(params)
    ):
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed for {target}")
    partial.rename(target)


# -- a model and a context ----------------------------------------------------------------


class _Context:
    """A loaded model and one context; `decode` runs a batch of (token, pos, seq, logits)."""

    def __init__(self, llama_cpp, model, ctx, max_tokens: int) -> None:
        self.lib = llama_cpp
        self.model = model
        self.ctx = ctx
        self.num_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        self.batch = llama_cpp.llama_batch_init(max_tokens, 0, 1)
        self.max_tokens = max_tokens

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)

    def decode(self, rows: list[tuple[int, int, int, bool]]) -> None:
        """rows: (token id, position, sequence id, wants logits), at most max_tokens."""
        batch = self.batch
        for i, (token, pos, seq, wants_logits) in enumerate(rows):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = wants_logits
        batch.n_tokens = len(rows)
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")

    def logits(self, index: int) -> np.ndarray:
        """The logits of row `index` of the last batch (a row that asked for them): [V]."""
        pointer = self.lib.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.num_vocab,))

    def argmax(self, index: int) -> int:
        return int(np.argmax(self.logits(index)))


@contextmanager
def open_context(
    gguf: str | Path, threads: int, num_ctx: int, num_seqs: int = 1, batch_tokens: int = 512
) -> Iterator[_Context]:
    llama_cpp = _lib()
    model_params = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), model_params)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {gguf}")
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = num_ctx
    params.n_batch = params.n_ubatch = batch_tokens
    params.n_seq_max = num_seqs
    params.n_threads = params.n_threads_batch = threads
    params.kv_unified = True  # one K/V pool for all sequences, as warpserve's block pool
    ctx = llama_cpp.llama_init_from_model(model, params)
    if not ctx:
        llama_cpp.llama_model_free(model)
        raise RuntimeError(f"llama.cpp could not create a context for {gguf}")
    context = _Context(llama_cpp, model, ctx, batch_tokens)
    try:
        yield context
    finally:
        llama_cpp.llama_batch_free(context.batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model)


# -- measurements -------------------------------------------------------------------------


def _prefill(context: _Context, prompts: dict[int, list[int]]) -> dict[int, int]:
    """Every prompt into its sequence, several sequences per batch; -> first token each."""
    rows = [
        (token, pos, seq, pos == len(prompt) - 1)
        for seq, prompt in prompts.items()
        for pos, token in enumerate(prompt)
    ]
    first: dict[int, int] = {}
    for start in range(0, len(rows), context.max_tokens):
        chunk = rows[start : start + context.max_tokens]
        context.decode(chunk)
        for index, (_, _, seq, wants_logits) in enumerate(chunk):
            if wants_logits:
                first[seq] = context.argmax(index)
    return first


def measure_single(
    gguf: str | Path, prompts: list[list[int]], output_len: int, threads: int
) -> dict[str, Any]:
    """One request at a time: TTFT (prompt processing + first token) and decode tokens/s."""
    num_ctx = max(map(len, prompts)) + output_len + 1
    with open_context(gguf, threads, num_ctx) as context:
        _prefill(context, {0: prompts[0][:8]})  # warm-up
        ttft, decode_s, token_ids = [], 0.0, []
        started_all, cpu_started = time.perf_counter(), time.process_time()
        for prompt in prompts:
            context.clear()
            started = time.perf_counter()
            tokens = [_prefill(context, {0: prompt})[0]]
            first_at = time.perf_counter()
            ttft.append(first_at - started)
            for pos in range(len(prompt), len(prompt) + output_len - 1):
                context.decode([(tokens[-1], pos, 0, True)])
                tokens.append(context.argmax(0))
            decode_s += time.perf_counter() - first_at
            token_ids.append(tokens)
        elapsed = time.perf_counter() - started_all
        cores_used = (time.process_time() - cpu_started) / elapsed
    num_tokens = sum(map(len, token_ids))
    return {
        "num_requests": len(prompts),
        "concurrency": 1,
        "output_len": output_len,
        "generated_tokens": num_tokens,
        "elapsed_s": elapsed,
        "generated_tokens_per_s": num_tokens / elapsed,
        "decode_tokens_per_s": (num_tokens - len(prompts)) / decode_s if decode_s else None,
        "ttft_s": percentiles(ttft),
        "cores_used": cores_used,  # llama.cpp's threads spin while they wait: busy != useful
        "token_ids": token_ids,
    }


def measure_batched(
    gguf: str | Path, prompts: list[list[int]], output_len: int, threads: int
) -> dict[str, Any]:
    """All prompts as sequences of one context, decoded together, one token each per step."""
    num_seqs = len(prompts)
    num_ctx = sum(len(p) + output_len for p in prompts) + num_seqs
    with open_context(gguf, threads, num_ctx, num_seqs=num_seqs) as context:
        _prefill(context, {0: prompts[0][:8]})  # warm-up
        context.clear()
        started, cpu_started = time.perf_counter(), time.process_time()
        first = _prefill(context, dict(enumerate(prompts)))
        first_at = time.perf_counter()
        tokens = {seq: [tok] for seq, tok in first.items()}
        for step in range(output_len - 1):
            context.decode([(tokens[s][-1], len(p) + step, s, True) for s, p in enumerate(prompts)])
            for seq in range(num_seqs):
                tokens[seq].append(context.argmax(seq))
        elapsed = time.perf_counter() - started
        cores_used = (time.process_time() - cpu_started) / elapsed
    num_tokens = sum(map(len, tokens.values()))
    return {
        "num_requests": num_seqs,
        "concurrency": num_seqs,
        "output_len": output_len,
        "generated_tokens": num_tokens,
        "elapsed_s": elapsed,
        "generated_tokens_per_s": num_tokens / elapsed,
        "decode_tokens_per_s": None,
        # Every prompt is processed before the first decode step: TTFT is the same for all.
        "ttft_s": percentiles([first_at - started] * num_seqs),
        "cores_used": cores_used,
        "token_ids": [tokens[s] for s in range(num_seqs)],
    }


def measure_perplexity(gguf: str | Path, windows: list[list[int]], threads: int) -> float:
    """exp(mean NLL) of every window's tokens after its first, each window its own context."""
    width = max(map(len, windows))
    total_nll, num_scored = 0.0, 0
    with open_context(gguf, threads, width, batch_tokens=width) as context:
        for window in windows:
            context.clear()
            context.decode([(tok, pos, 0, True) for pos, tok in enumerate(window)])
            for pos, target in enumerate(window[1:]):
                logits = context.logits(pos).astype(np.float64)
                peak = logits.max()
                log_z = peak + math.log(np.exp(logits - peak).sum())
                total_nll += log_z - logits[target]
                num_scored += 1
    return math.exp(total_nll / num_scored)


def measure(
    gguf: Path,
    single_prompts: list[list[int]],
    batched_prompts: list[list[int]],
    output_len: int,
    threads: int,
    *,
    types: list[str] | None = None,
    ppl_windows: list[list[int]] | None = None,
    cache_dir: Path | None = None,
) -> dict[str, dict]:
    """Per quantization type: {"variant", "single", "batched", "perplexity"}."""
    from warpserve import config

    out_dir = cache_dir or config.cache_dir() / "gguf"
    variants = prepare_variants(gguf, types or list(QUANT_TYPES), out_dir, threads)
    results = {}
    for name, variant in variants.items():
        logger.info("llama.cpp %s: %s", name, variant["path"])
        result: dict[str, Any] = {"variant": variant}
        result["single"] = measure_single(variant["path"], single_prompts, output_len, threads)
        result["batched"] = measure_batched(variant["path"], batched_prompts, output_len, threads)
        if ppl_windows:
            result["perplexity"] = measure_perplexity(variant["path"], ppl_windows, threads)
        logger.info(
            "llama.cpp %s: %.1f decode tok/s (1 seq), %.1f tok/s (%d seqs)",
            name,
            result["single"]["decode_tokens_per_s"] or float("nan"),
            result["batched"]["generated_tokens_per_s"],
            len(batched_prompts),
        )
        results[name] = result
    return results
