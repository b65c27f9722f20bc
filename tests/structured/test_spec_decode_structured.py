"""Constrained requests under speculative decoding: never drafted, so their tokens come one
per step from the masked distribution, while unconstrained ones in the same engine are."""

from __future__ import annotations

import re

import pytest

from warpserve.config import CacheConfig, EngineConfig, ModelConfig, SpeculativeConfig
from warpserve.engine.llm import LLM
from warpserve.request import SamplingParams
from warpserve.structured.compiler import GrammarCompiler
from warpserve.structured.spec import GrammarRequest, StructuredKind

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Repetitive, so prompt lookup (n-gram) has plenty to propose.
PROMPT = "1 2 3 4 5 6 7 8 9 10 1 2 3 4 5 6 7 8 9 10 1 2 3 4 5 6 7 8 9 10 1 2 3 4 5"


def test_constrained_rows_are_never_drafted() -> None:
    llm = LLM.from_config(
        EngineConfig(
            model=ModelConfig(model="smollm2-135m-instruct", num_threads=1),
            cache=CacheConfig(memory_gib=0.25),
            speculative=SpeculativeConfig(method="ngram", adaptive=False),
        )
    )
    spec = GrammarCompiler.for_tokenizer(llm.tokenizer).compile(
        GrammarRequest(StructuredKind.REGEX, r"( [0-9]{1,2}){8}")
    )
    [constrained] = llm.generate(
        [PROMPT], SamplingParams(max_tokens=40, temperature=0, structured=spec)
    )
    assert re.fullmatch(r"( [0-9]{1,2}){8}", constrained.outputs[0].text)
    assert llm.engine.stats().spec_decode_num_drafts == 0
    llm.generate([PROMPT], SamplingParams(max_tokens=16, temperature=0, ignore_eos=True))
    assert llm.engine.stats().spec_decode_num_drafts > 0  # speculation is on for the others
