"""Self-speculation by layer skipping: the target's first `depth` layers, then its final
norm and LM head, draft for the whole target.

No second model and no second cache: the drafter's layers are the target's, so the K/V
it needs for every computed position are already in the target's cache, and the K/V it
writes for draft positions are overwritten by the verify pass (at the same slots).
"""

from __future__ import annotations

import torch
from torch import nn

from warpserve.execution.executor import ModelExecutor
from warpserve.layers.attention import AttentionMetadata
from warpserve.models.llama import LlamaForCausalLM
from warpserve.spec_decode.drafter import ModelDrafter


class EarlyExitModel(nn.Module):
    """A view of a native decoder that stops after its first `depth` layers."""

    def __init__(self, target: LlamaForCausalLM, depth: int) -> None:
        super().__init__()
        for name in ("embed_tokens", "layers", "norm", "compute_logits"):
            if not hasattr(target, name):
                raise ValueError(
                    f"layer skipping needs a native decoder; {type(target)} has no {name}"
                )
        if not 1 <= depth < len(target.layers):
            raise ValueError(f"layer_skip_depth must be in [1, {len(target.layers) - 1}]")
        self.target = target
        self.depth = depth

    def forward(
        self,
        input_ids: torch.Tensor,  # [T]
        positions: torch.Tensor,  # [T]
        kv_caches: list[torch.Tensor],  # the target's first `depth` layers' caches
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x = self.target.embed_tokens(input_ids)
        for layer, kv_cache in zip(self.target.layers[: self.depth], kv_caches, strict=True):
            x = layer(x, positions, kv_cache, meta)
        return self.target.norm(x)  # [T, hidden]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.target.compute_logits(hidden)


def layer_skip_proposer(target: ModelExecutor, depth: int) -> ModelDrafter:
    """Eager: the fused decoder runs whole models only."""
    model = EarlyExitModel(target.model, depth)  # type: ignore[arg-type]
    executor = ModelExecutor(model, target.kv_caches[:depth], target.block_size)
    return ModelDrafter("layerskip", executor, shares_target_cache=True)
