"""Configuration: frozen dataclasses, one per concern, every field defaulted and documented."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

# The choices of ModelConfig's string fields, in one place (CLI flags take them from here).
DTYPES = ("float32", "bfloat16")
# Weight quantization presets (quant/swap.py implements every one but "none").
QUANTIZATION_PRESETS = ("none", "int8", "int4", "w8a8", "int8-mixed")
DECODE_BACKENDS = ("auto", "eager", "fused")
ATTENTION_BACKENDS = ("auto", "kernel", "sdpa")


@dataclass(frozen=True)
class CacheConfig:
    """The paged KV cache."""

    block_size: int = 16  # tokens per KV block
    memory_gib: float = 2.0  # K/V tensors are allocated once, sized from this budget
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a power of two, e.g. 16")
        if self.memory_gib <= 0:
            raise ValueError("memory_gib must be > 0, e.g. 2.0")


@dataclass(frozen=True)
class SchedulerConfig:
    """How much work one engine step may do."""

    max_num_seqs: int = 64  # running requests per step
    max_num_batched_tokens: int = 1024  # tokens per step (prefill chunks + decodes)
    enable_chunked_prefill: bool = True
    max_waiting: int = 256  # admitted but not yet running; beyond this, requests are refused

    def __post_init__(self) -> None:
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError("max_num_batched_tokens must be >= max_num_seqs")
        if self.max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """Which model and how to run it."""

    model: str = "smollm2-135m-instruct"  # a short name, a local folder or a .gguf file
    dtype: str = "float32"  # float32 | bfloat16
    max_model_len: int | None = None  # None: the model's own context length
    num_threads: int | None = None  # torch intra-op threads; None: all cores, see below
    # With num_threads None, the serving engine (AsyncLLM) runs steps of at most
    # few_seqs_max sequences on few_seqs_num_threads threads and bigger ones on all
    # cores: the HTTP front end shares the cores, and a few streams decode faster on one
    # thread than on two, many faster on two (engine/threads.py). An explicit
    # num_threads is used for every step.
    few_seqs_num_threads: int = 1
    few_seqs_max: int = 4
    force_fallback: bool = False  # run through Transformers even if a native class exists
    # Decode attention: "kernel" (C++, reads K/V in place), "sdpa" (gather + torch SDPA),
    # or "auto" (the kernel when it builds, else sdpa).
    attention_backend: str = "auto"
    # Weight quantization applied after loading: one of QUANTIZATION_PRESETS. Accuracy
    # per preset: `warpserve bench accuracy` (the perplexity gate of quant/perplexity.py).
    quantization: str = "none"
    # Decode-only steps: "eager" (the PyTorch modules, one op at a time), "fused" (the
    # whole step in one C++ call: execution/fused_decode.py; eager with a warning when the
    # extension cannot be built or cannot run the model exactly), or "auto" (fused where it
    # can run, else eager).
    decode_backend: str = "auto"

    def __post_init__(self) -> None:
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1, or None for all cores")
        if self.few_seqs_num_threads < 1 or self.few_seqs_max < 0:
            raise ValueError("few_seqs_num_threads must be >= 1 and few_seqs_max >= 0")
        for name, choices in (
            ("decode_backend", DECODE_BACKENDS),
            ("quantization", QUANTIZATION_PRESETS),
            ("dtype", DTYPES),
            ("attention_backend", ATTENTION_BACKENDS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be >= 1")


SPECULATIVE_METHODS = ("none", "ngram", "draft", "layerskip", "auto")


@dataclass(frozen=True)
class SpeculativeConfig:
    """Speculative decoding: propose tokens cheaply, verify them in one target forward.

    Lossless: greedy outputs are the target's own, sampled outputs follow the target's
    distribution (rejection sampling). Methods: "ngram" (prompt lookup, no extra model),
    "draft" (a smaller model with the target's tokenizer, at draft_model), "layerskip"
    (the target's first layer_skip_depth layers and its LM head), "auto" (prompt lookup,
    only for requests and batches where the expected gain beats the verify cost).
    """

    method: str = "none"
    num_speculative_tokens: int = 5  # the most draft tokens per request per step
    adaptive: bool = True  # tune each request's number of drafts to its acceptance
    ngram_min: int = 2  # prompt lookup matches the longest suffix of ngram_max..ngram_min
    ngram_max: int = 5
    draft_model: str | None = None  # method "draft": a folder or .gguf sharing the tokenizer
    # Weight-only quantization of the draft ("int8" | "int4"; None: as loaded). A quantized
    # copy of the target itself is a draft model that needs no second checkpoint.
    draft_quantization: str | None = None
    layer_skip_depth: int = 8  # method "layerskip": how many of the target's layers draft

    def __post_init__(self) -> None:
        if self.method not in SPECULATIVE_METHODS:
            raise ValueError(f"speculative method must be one of {', '.join(SPECULATIVE_METHODS)}")
        if not 1 <= self.num_speculative_tokens <= 16:
            raise ValueError("num_speculative_tokens must be in [1, 16], e.g. 5")
        if not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError("ngram sizes need 1 <= ngram_min <= ngram_max, e.g. 2 and 5")
        if self.method == "draft" and not self.draft_model:
            raise ValueError("method 'draft' needs draft_model: a folder or .gguf path")
        if self.draft_quantization not in (None, "int8", "int4"):
            raise ValueError("draft_quantization must be 'int8', 'int4' or None")
        if self.layer_skip_depth < 1:
            raise ValueError("layer_skip_depth must be >= 1, e.g. 8")

    @property
    def is_enabled(self) -> bool:
        return self.method != "none"


@dataclass(frozen=True)
class EngineConfig:
    model: ModelConfig = ModelConfig()
    cache: CacheConfig = CacheConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    seed: int = 0
    speculative: SpeculativeConfig = SpeculativeConfig()


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line flags of an EngineConfig, for every command that builds an engine
    (generate, serve, bench throughput). Commands add --model themselves (each has its
    own default and meaning) and may change defaults with parser.set_defaults."""
    group = parser.add_argument_group("engine")
    group.add_argument("--dtype", default=ModelConfig.dtype, choices=DTYPES)
    group.add_argument("--max-model-len", type=int, default=None)
    group.add_argument(
        "--num-threads", "--threads", dest="num_threads", type=int, default=None,
        help="torch intra-op threads (default: all cores, fewer for small serving steps)",
    )  # fmt: skip
    group.add_argument(
        "--quantization",
        default=ModelConfig.quantization,
        choices=QUANTIZATION_PRESETS,
        help="weight quantization; accuracy per preset: warpserve bench accuracy",
    )
    group.add_argument(
        "--decode-backend",
        default=ModelConfig.decode_backend,
        choices=DECODE_BACKENDS,
        help="fused: each decode step in one C++ call; eager: PyTorch modules",
    )
    group.add_argument("--kv-cache-gib", type=float, default=CacheConfig.memory_gib)
    group.add_argument(
        "--block-size", type=int, default=CacheConfig.block_size, help="tokens per KV block"
    )
    group.add_argument(
        "--no-prefix-caching",
        dest="enable_prefix_caching",
        action="store_false",
        help="recompute every prompt from its first token",
    )
    group.add_argument("--max-num-seqs", type=int, default=SchedulerConfig.max_num_seqs)
    group.add_argument(
        "--max-num-batched-tokens", type=int, default=SchedulerConfig.max_num_batched_tokens
    )
    group.add_argument("--max-waiting", type=int, default=SchedulerConfig.max_waiting)
    spec = parser.add_argument_group("speculative decoding (lossless)")
    spec.add_argument(
        "--speculative",
        default=SpeculativeConfig.method,
        choices=SPECULATIVE_METHODS,
        help="ngram: prompt lookup; draft: --draft-model; layerskip: the first layers; "
        "auto: prompt lookup where it pays",
    )
    spec.add_argument(
        "--num-speculative-tokens", type=int, default=SpeculativeConfig.num_speculative_tokens
    )
    spec.add_argument("--draft-model", default=None, help="a folder or .gguf sharing the tokenizer")
    spec.add_argument(
        "--draft-quantization", default=None, choices=["int8", "int4"], help="of the draft model"
    )
    spec.add_argument("--layer-skip-depth", type=int, default=SpeculativeConfig.layer_skip_depth)


def engine_config_from_args(args: argparse.Namespace, seed: int = 0) -> EngineConfig:
    """The EngineConfig of the flags add_engine_arguments added (and args.model)."""
    return EngineConfig(
        model=ModelConfig(
            model=args.model,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            num_threads=args.num_threads,
            quantization=args.quantization,
            decode_backend=args.decode_backend,
        ),
        cache=CacheConfig(
            memory_gib=args.kv_cache_gib,
            block_size=args.block_size,
            enable_prefix_caching=args.enable_prefix_caching,
        ),
        scheduler=SchedulerConfig(
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            max_waiting=args.max_waiting,
        ),
        speculative=SpeculativeConfig(
            method=args.speculative,
            num_speculative_tokens=args.num_speculative_tokens,
            draft_model=args.draft_model,
            draft_quantization=args.draft_quantization,
            layer_skip_depth=args.layer_skip_depth,
        ),
        seed=seed,
    )


CACHE_DIR_ENV = "WARPSERVE_CACHE_DIR"
DATA_DIR_ENV = "WARPSERVE_DATA_DIR"


def cache_dir() -> Path:
    """Where warpserve keeps files it derives from models (e.g. converted GGUF tokenizers).

    $WARPSERVE_CACHE_DIR if set, else ~/.cache/warpserve. Read when called, never at import.
    """
    override = os.environ.get(CACHE_DIR_ENV)
    return Path(override).expanduser() if override else Path.home() / ".cache" / "warpserve"


def data_dir() -> Path:
    """Where the reference data sets are: wikitext2-valid.txt (benchmark prompts, encoder
    calibration and timing text, perplexity) and sts-dev.csv (encoder validation).

    $WARPSERVE_DATA_DIR if set (the tests point it at tests/data), else ../shared/data
    beside the checkout. Read when called, never at import.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "data"
