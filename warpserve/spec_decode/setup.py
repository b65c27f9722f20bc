"""From a SpeculativeConfig and the loaded target to a ready Speculator."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from warpserve.config import SpeculativeConfig
from warpserve.spec_decode.adaptive import DraftLengthPolicy, StepCost
from warpserve.spec_decode.cost import measure_step_cost
from warpserve.spec_decode.draft_model import draft_model_proposer, load_draft_model
from warpserve.spec_decode.layer_skip import layer_skip_proposer
from warpserve.spec_decode.ngram import NgramProposer
from warpserve.spec_decode.speculator import Speculator
from warpserve.spec_decode.types import Proposer


def build_speculator(
    config: SpeculativeConfig,
    target: nn.Module,
    target_kv_caches: list[torch.Tensor],
    block_size: int,
    decode_kernel: object,
    eos_token_ids: frozenset[int],
    max_model_len: int,
    step_cost: StepCost | None = None,
    fused: Callable[..., torch.Tensor] | None = None,
) -> Speculator:
    """step_cost: the target's measured step cost (None: measured here, ~10 forwards,
    through `fused` (the runner's fused decoder) when decode rows run there)."""
    proposer = build_proposer(
        config,
        target,
        target_kv_caches,
        block_size,
        decode_kernel,
        max_model_len,
        fused is not None,
    )
    if step_cost is None:
        step_cost = measure_step_cost(target, target_kv_caches, block_size, decode_kernel, fused)
    policy = DraftLengthPolicy(
        config.num_speculative_tokens, config.adaptive, config.method == "auto", step_cost
    )
    return Speculator(proposer, policy, eos_token_ids)


def build_proposer(
    config: SpeculativeConfig,
    target: nn.Module,
    target_kv_caches: list[torch.Tensor],
    block_size: int,
    decode_kernel: object,
    max_model_len: int,
    use_fused: bool = False,
) -> Proposer:
    """use_fused: a draft model drafts through its own fused decoder (as the target's
    decode rows run through the target's), where the kernel can run it."""
    if config.method in ("ngram", "auto"):
        return NgramProposer(config.ngram_min, config.ngram_max)
    if config.method == "layerskip":
        depth = config.layer_skip_depth
        return layer_skip_proposer(target, target_kv_caches, depth, block_size, decode_kernel)
    if config.method == "draft":
        assert config.draft_model is not None  # checked by SpeculativeConfig
        dtype = next(target.parameters()).dtype
        vocab_size = target.config.vocab_size
        model = load_draft_model(
            config.draft_model, dtype, max_model_len, vocab_size, config.draft_quantization
        )
        num_blocks = target_kv_caches[0].shape[1]
        return draft_model_proposer(model, num_blocks, block_size, decode_kernel, use_fused)
    raise ValueError(f"speculative method '{config.method}' has no proposer")
