"""Tiny models for speculative decoding: a 12-token vocabulary makes a random model
repeat itself (so prompt lookup gets accepted) and makes chi-square tests cheap."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import build_tiny_llama, build_tokenizer
from warpserve.config import (
    CacheConfig,
    EngineConfig,
    ModelConfig,
    SchedulerConfig,
    SpeculativeConfig,
)
from warpserve.engine.llm import LLM

SMALL_VOCAB = 12
EOS_ID = 2  # <|im_end|> in the fixture tokenizer
BLOCK_BYTES = 2 * 2 * 16 * 2 * 16 * 4  # K+V x layers x block_size x kv heads x head_dim x fp32


def _small_model(folder: Path, seed: int, **overrides) -> Path:
    build_tokenizer(folder)
    build_tiny_llama(folder, SMALL_VOCAB, EOS_ID, seed=seed, **overrides)
    return folder


@pytest.fixture(scope="session")
def small_target_dir(tmp_path_factory) -> Path:
    return _small_model(tmp_path_factory.mktemp("small-target"), seed=0)


@pytest.fixture(scope="session")
def small_draft_dir(tmp_path_factory) -> Path:
    """Another random model over the same tokens: its drafts are often rejected."""
    return _small_model(tmp_path_factory.mktemp("small-draft"), seed=1)


def make_llm(
    folder: Path, spec: SpeculativeConfig | None = None, num_blocks: int = 512, **sched
) -> LLM:
    sched.setdefault("max_num_batched_tokens", 256)
    config = EngineConfig(
        model=ModelConfig(model=str(folder)),
        cache=CacheConfig(memory_gib=num_blocks * BLOCK_BYTES / 2**30),
        scheduler=SchedulerConfig(**sched),
        speculative=spec or SpeculativeConfig(),
    )
    return LLM.from_config(config)
