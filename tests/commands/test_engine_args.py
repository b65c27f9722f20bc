"""One set of engine flags: `generate`, `serve` and `bench throughput` parse them alike."""

from __future__ import annotations

import pytest
from torch import nn

from warpserve.cli import build_parser
from warpserve.config import (
    QUANTIZATION_PRESETS,
    CacheConfig,
    EngineConfig,
    ModelConfig,
    SchedulerConfig,
    SpeculativeConfig,
    engine_config_from_args,
)
from warpserve.quant.swap import quantize_model

FLAGS = [
    "--model", "some.gguf", "--dtype", "bfloat16", "--max-model-len", "256",
    "--threads", "1", "--quantization", "int4", "--decode-backend", "eager",
    "--kv-cache-gib", "0.25", "--block-size", "8", "--no-prefix-caching",
    "--max-num-seqs", "4", "--max-num-batched-tokens", "64", "--max-waiting", "9",
    "--speculative", "draft", "--num-speculative-tokens", "3", "--draft-model", "d.gguf",
    "--draft-quantization", "int4",
]  # fmt: skip
EXPECTED = EngineConfig(
    model=ModelConfig(
        model="some.gguf",
        dtype="bfloat16",
        max_model_len=256,
        num_threads=1,
        quantization="int4",
        decode_backend="eager",
    ),
    cache=CacheConfig(memory_gib=0.25, block_size=8, enable_prefix_caching=False),
    scheduler=SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64, max_waiting=9),
    speculative=SpeculativeConfig(
        method="draft", num_speculative_tokens=3, draft_model="d.gguf", draft_quantization="int4"
    ),
)


@pytest.mark.parametrize("command", [["generate"], ["serve"], ["bench", "throughput"]])
def test_every_command_builds_the_same_engine_config(command: list[str]) -> None:
    argv = command + FLAGS
    assert engine_config_from_args(build_parser(argv).parse_args(argv)) == EXPECTED


def test_defaults_are_the_config_defaults_unless_a_command_says_otherwise() -> None:
    argv = ["serve"]
    assert engine_config_from_args(build_parser(argv).parse_args(argv)) == EngineConfig(
        model=ModelConfig(model="smollm2-135m-instruct")
    )
    argv = ["generate"]
    generate = engine_config_from_args(build_parser(argv).parse_args(argv))
    assert generate.cache.memory_gib == 0.5  # one request needs little KV cache


@pytest.mark.parametrize("preset", [p for p in QUANTIZATION_PRESETS if p != "none"])
def test_every_preset_the_flags_offer_quantizes(preset: str) -> None:
    model = nn.Sequential(nn.Linear(64, 64, bias=False)).requires_grad_(False)
    quantize_model(model, preset)
    assert type(model[0]) is not nn.Linear


def test_an_unknown_preset_is_refused_by_the_config() -> None:
    with pytest.raises(ValueError, match="quantization must be one of"):
        ModelConfig(quantization="int3")
