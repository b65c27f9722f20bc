"""Any other causal LM, run through Transformers behind the runner's interface.

Correct and slower: one sequence at a time, each with its own Transformers KV cache
(keyed by request id, dropped when the scheduler frees the request). The scheduler still
accounts blocks for these requests, so memory stays bounded the same way.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, PretrainedConfig, PreTrainedModel


class TransformersCausalLM(nn.Module):
    is_fallback = True

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model.eval()
        self.config: PretrainedConfig = model.config
        self.caches: dict[str, tuple[int, DynamicCache]] = {}  # id -> (num cached, cache)

    @classmethod
    def from_config(cls, config: PretrainedConfig, dtype: torch.dtype) -> TransformersCausalLM:
        return cls(AutoModelForCausalLM.from_config(config, dtype=dtype))

    @torch.no_grad()
    def load_weights(self, tensors) -> None:
        state = dict(tensors)
        missing, unexpected = self.model.load_state_dict(state, strict=False)
        missing = [m for m in missing if "lm_head" not in m]  # tied heads are absent
        if missing:
            raise ValueError(f"checkpoint is missing {len(missing)} weights, e.g. {missing[0]}")
        if getattr(self.model.config, "tie_word_embeddings", False):
            self.model.tie_weights()

    @torch.no_grad()
    def step(self, request_id: str, token_ids: list[int], num_computed_tokens: int) -> torch.Tensor:
        """Feed a sequence's new tokens; returns the last position's logits [vocab]."""
        num_cached, cache = self.caches.get(request_id, (0, None))
        if cache is None or num_cached != num_computed_tokens:
            # New, preempted or out of step: recompute from the start.
            raise_if_partial(num_computed_tokens)
            cache = DynamicCache()
        out = self.model(input_ids=torch.tensor([token_ids]), past_key_values=cache, use_cache=True)
        self.caches[request_id] = (num_computed_tokens + len(token_ids), out.past_key_values)
        return out.logits[0, -1].float()

    def free(self, request_id: str) -> None:
        self.caches.pop(request_id, None)


def raise_if_partial(num_computed_tokens: int) -> None:
    if num_computed_tokens != 0:
        raise RuntimeError(
            "fallback model lost its cache for a partly computed sequence; "
            "prefix caching must be off for fallback models"
        )
