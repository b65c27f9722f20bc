"""The offline facade: LLM(...).generate(prompts, sampling_params) -> outputs in order."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from warpserve.config import EngineConfig
from warpserve.engine.llm_engine import LLMEngine
from warpserve.outputs import RequestOutput
from warpserve.request import SamplingParams


class LLM:
    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self._ids = itertools.count()

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLM:
        return cls(LLMEngine.from_config(config))

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: Sequence[str | list[int]] | str,
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        if isinstance(prompts, str):
            prompts = [prompts]
        params = sampling_params or SamplingParams()
        per_prompt = [params] * len(prompts) if isinstance(params, SamplingParams) else params
        if len(per_prompt) != len(prompts):
            raise ValueError("give one SamplingParams, or one per prompt")
        ids = [f"offline-{next(self._ids)}" for _ in prompts]
        final: dict[str, RequestOutput] = {}
        try:
            for request_id, prompt, p in zip(ids, prompts, per_prompt, strict=True):
                self.engine.add_request(request_id, prompt, p)
            while len(final) < len(ids):
                for out in self.engine.step():
                    if out.finished:
                        final[out.request_id] = out
                for request_id, error in self.engine.take_failures().items():
                    raise RuntimeError(f"request {request_id} failed: {error}") from error
        finally:
            for request_id in ids:
                if request_id not in final:
                    self.engine.abort_request(request_id)
        return [final[i] for i in ids]
