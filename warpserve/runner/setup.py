"""From a loaded model and the engine's choices to the runner that will run it: the
decisions made once here (which runner, how decode rows run, which speculator) are never
asked again per step."""

from __future__ import annotations

from warpserve.config import SpeculativeConfig
from warpserve.execution.executor import ModelExecutor
from warpserve.models.hf_fallback import TransformersCausalLM
from warpserve.models.llama import LlamaForCausalLM
from warpserve.runner.fallback import FallbackRunner
from warpserve.runner.model_runner import ModelRunner
from warpserve.runner.speculation import NoSpeculation, Speculator
from warpserve.sampling.sampler import Sampler
from warpserve.spec_decode.setup import build_speculator


def build_runner(
    model: LlamaForCausalLM | TransformersCausalLM,
    num_blocks: int,
    block_size: int,
    sampler: Sampler,
    decode_backend: str,
    speculative: SpeculativeConfig,
    max_model_len: int,
) -> ModelRunner | FallbackRunner:
    """decode_backend: ModelConfig.decode_backend ("auto" | "fused" | "eager")."""
    if isinstance(model, TransformersCausalLM):
        return FallbackRunner(model, sampler)
    quiet = decode_backend == "auto"
    executor = ModelExecutor.build(model, num_blocks, block_size, decode_backend, quiet=quiet)
    speculator: Speculator = NoSpeculation()
    if speculative.is_enabled:
        eos_token_ids = frozenset(sampler.eos_token_ids)
        speculator = build_speculator(speculative, executor, eos_token_ids, max_model_len)
    return ModelRunner(executor, sampler, speculator)
