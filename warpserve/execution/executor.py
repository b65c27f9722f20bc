"""One model's forward passes over its own paged K/V: chunks in, logits out.

The target (runner/) and a drafting model (spec_decode/) each own one executor. How decode
rows run is decided once, when the executor is built: through the fused decoder
(execution/fused_decode.py) where it can run the model exactly, else through the eager
modules. Prefill chunks always run eager (large GEMMs, where MKL is near the CPU's peak);
a step that mixes both runs its decode rows fused and its prefill chunks eager. Rows never
depend on each other, so splitting a step changes no result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from warpserve.execution.fused_decode import FusedDecoder
from warpserve.execution.inputs import Chunk, StepInputs, build_step_inputs
from warpserve.execution.memory import allocate_kv
from warpserve.layers.attention import AttentionMetadata
from warpserve.models.llama import LlamaForCausalLM


class PagedLM(Protocol):
    """A native decoder (or a view of one, such as the layer-skip drafter's early exit)."""

    def __call__(
        self,
        input_ids: torch.Tensor,  # [T]
        positions: torch.Tensor,  # [T]
        kv_caches: list[torch.Tensor],
        meta: AttentionMetadata,
    ) -> torch.Tensor: ...  # [T, hidden]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...  # [N, vocab] float32


class ModelExecutor:
    def __init__(
        self,
        model: PagedLM,
        kv_caches: list[torch.Tensor],
        block_size: int,
        fused: FusedDecoder | None = None,
        fused_max_tokens: int = 0,
    ) -> None:
        """fused: runs the decode rows. fused_max_tokens: forwards of at most this many
        tokens run through it whole, every token as a decode row (a drafter's catch-up
        chunks: the kernel writes a layer's K/V for all rows before any row attends, so
        that is causal attention as a prefill computes it)."""
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.fused = fused
        self.fused_max_tokens = fused_max_tokens

    @classmethod
    def build(
        cls,
        model: LlamaForCausalLM,
        num_blocks: int,
        block_size: int,
        decode_backend: str,
        *,
        quiet: bool = False,
        fused_max_tokens: int = 0,
    ) -> ModelExecutor:
        """K/V tensors for `model`, and its fused decoder unless decode_backend is "eager"
        (if the decoder cannot run the model: eager, logged; a warning unless `quiet`)."""
        kv_caches = allocate_kv(model, num_blocks, block_size)
        fused = None
        if decode_backend != "eager":
            fused = FusedDecoder.build(model, kv_caches, quiet=quiet)
        return cls(model, kv_caches, block_size, fused, fused_max_tokens)

    @property
    def decode_backend(self) -> str:
        """What runs decode rows: "fused" or "eager"."""
        return "eager" if self.fused is None else "fused"

    @property
    def num_blocks(self) -> int:
        return self.kv_caches[0].shape[1]

    def logits(self, chunks: Sequence[Chunk]) -> torch.Tensor:
        """Runs the chunks (writing their K/V); [sum of num_logits, vocab], in chunk order."""
        if self.fused is None:
            return self._eager(chunks)
        if sum(len(c.token_ids) for c in chunks) <= self.fused_max_tokens:
            return self.fused(
                build_step_inputs([c.as_decode_rows() for c in chunks], self.block_size)
            )
        rows = [c for c in chunks if c.is_decode_rows]
        if len(rows) == len(chunks):
            return self.fused(build_step_inputs(chunks, self.block_size))
        if not rows:
            return self._eager(chunks)
        prefills = [c for c in chunks if not c.is_decode_rows]
        fused = self.fused(build_step_inputs(rows, self.block_size))
        return _in_chunk_order(torch.cat([fused, self._eager(prefills)]), chunks)

    def run_eager(self, inputs: StepInputs) -> torch.Tensor:
        """The eager modules over prepared inputs -> [R, vocab] logits."""
        hidden = self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta)
        return self.model.compute_logits(hidden[inputs.logit_rows])

    def _eager(self, chunks: Sequence[Chunk]) -> torch.Tensor:
        return self.run_eager(build_step_inputs(chunks, self.block_size))


def _in_chunk_order(logits: torch.Tensor, chunks: Sequence[Chunk]) -> torch.Tensor:
    """logits: the decode-row chunks' rows, then the prefill chunks' -> chunk order."""
    starts: list[int] = []
    num_rows = 0
    for group in (True, False):
        for chunk in chunks:
            if chunk.is_decode_rows == group:
                starts.append(num_rows)
                num_rows += chunk.num_logits
    decode_first = sorted(range(len(chunks)), key=lambda i: not chunks[i].is_decode_rows)
    if decode_first == list(range(len(chunks))):
        return logits  # already in chunk order (the runner puts decode rows first)
    start_of = dict(zip(decode_first, starts, strict=True))
    index = [
        r for i, c in enumerate(chunks) for r in range(start_of[i], start_of[i] + c.num_logits)
    ]
    return logits[torch.tensor(index, dtype=torch.long)]
