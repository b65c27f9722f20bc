"""From a SpeculativeConfig and the target's executor to a ready Speculator."""

from __future__ import annotations

from warpserve.config import SpeculativeConfig
from warpserve.execution.executor import ModelExecutor
from warpserve.spec_decode.adaptive import DraftLengthPolicy, StepCost
from warpserve.spec_decode.cost import measure_step_cost
from warpserve.spec_decode.draft_model import draft_model_proposer, load_draft_model
from warpserve.spec_decode.layer_skip import layer_skip_proposer
from warpserve.spec_decode.ngram import NgramProposer
from warpserve.spec_decode.speculator import Speculator
from warpserve.spec_decode.types import Proposer


def build_speculator(
    config: SpeculativeConfig,
    target: ModelExecutor,
    eos_token_ids: frozenset[int],
    max_model_len: int,
    step_cost: StepCost | None = None,
) -> Speculator:
    """step_cost: the target's measured step cost (None: measured here, ~35 forwards
    through the target's executor)."""
    proposer = build_proposer(config, target, max_model_len)
    if step_cost is None:
        step_cost = measure_step_cost(target)
    policy = DraftLengthPolicy(
        config.num_speculative_tokens, config.adaptive, config.method == "auto", step_cost
    )
    return Speculator(config.method, proposer, policy, eos_token_ids)


def build_proposer(
    config: SpeculativeConfig, target: ModelExecutor, max_model_len: int
) -> Proposer:
    """A draft model drafts through its own fused decoder where the target's decode rows
    run through the target's."""
    if config.method in ("ngram", "auto"):
        return NgramProposer(config.ngram_min, config.ngram_max)
    if config.method == "layerskip":
        return layer_skip_proposer(target, config.layer_skip_depth)
    if config.method == "draft":
        assert config.draft_model is not None  # checked by SpeculativeConfig
        model = target.model
        draft = load_draft_model(
            config.draft_model,
            next(model.parameters()).dtype,  # type: ignore[attr-defined]
            max_model_len,
            model.config.vocab_size,  # type: ignore[attr-defined]
            model.decode_attention,  # type: ignore[attr-defined]
            config.draft_quantization,
        )
        return draft_model_proposer(draft, target)
    raise ValueError(f"speculative method '{config.method}' has no proposer")
