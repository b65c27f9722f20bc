"""The two grammar engines behind `CompiledGrammar` / `Matcher` (spec.py).

xgrammar is the main backend (fast masks: a precomputed token cache per grammar state);
llguidance takes what xgrammar rejects (some JSON Schema features, Lark grammars). Both
write the same int32 bitmask layout: bit j of word i allows token 32 * i + j.

JSON comes out without free whitespace (", " and ": " separators only): a small model
left free to emit whitespace can loop on newlines until max_tokens.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import torch

from warpserve.structured.spec import GrammarError, GrammarRequest, StructuredKind, StructuredStats

# xgrammar prefixes its errors with a timestamp and a C++ source location.
_XGR_LOCATION = re.compile(r"^\[[\d:]+\] [^ ]+:\d+: ")
_SEPARATORS = (", ", ": ")


def _clean(exc: BaseException) -> str:
    return _XGR_LOCATION.sub("", str(exc).strip()).strip()


# Keywords xgrammar 0.2 accepts but does not enforce (measured: it lets [1, 1] through
# uniqueItems and "a" through {"not": {"type": "string"}}; oneOf is compiled as anyOf).
# A schema using one goes to llguidance, which enforces it or says it cannot: a 400,
# never an answer that only looks constrained.
_XGRAMMAR_UNENFORCED = frozenset(
    {
        "allOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "uniqueItems",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "unevaluatedProperties",
        "unevaluatedItems",
        "contentSchema",
    }
)
# Keywords whose value maps names (not keywords) to schemas.
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions"})


def unenforced_keywords(schema: Any) -> set[str]:
    """The keywords of `schema` (at any depth) that xgrammar would silently ignore."""
    found: set[str] = set()
    if isinstance(schema, list):
        for item in schema:
            found |= unenforced_keywords(item)
    elif isinstance(schema, dict):
        for key, value in schema.items():
            if key in _XGRAMMAR_UNENFORCED:
                found.add(key)
            if key in _NAMED_SCHEMAS and isinstance(value, dict):
                for sub in value.values():
                    found |= unenforced_keywords(sub)
            elif key not in ("enum", "const", "default", "examples"):
                found |= unenforced_keywords(value)
    return found


class XGrammarBackend:
    name = "xgrammar"

    def __init__(self, hf_tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.info = xgr.TokenizerInfo.from_huggingface(
            hf_tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids
        )
        self.vocab_size = vocab_size
        # One compile thread per grammar: the server already compiles off the engine thread.
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=1, cache_enabled=False)

    def compile(self, request: GrammarRequest, stats: StructuredStats) -> XGrammarGrammar:
        try:
            compiled = self._compile(request)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise GrammarError(_clean(exc)) from None
        return XGrammarGrammar(compiled, self.vocab_size, stats)

    def _compile(self, request: GrammarRequest) -> Any:
        c, kind, source = self._compiler, request.kind, request.source
        if kind is StructuredKind.JSON_OBJECT:
            return c.compile_json_schema(
                '{"type": "object"}', any_whitespace=False, separators=_SEPARATORS
            )
        if kind is StructuredKind.JSON_SCHEMA:
            ignored = unenforced_keywords(json.loads(source))
            if ignored:
                raise GrammarError(f"xgrammar does not enforce {', '.join(sorted(ignored))}")
            return c.compile_json_schema(source, any_whitespace=False, separators=_SEPARATORS)
        if kind is StructuredKind.REGEX:
            return c.compile_regex(source)
        if kind is StructuredKind.CHOICE:
            choices = json.loads(source)
            return c.compile_grammar("root ::= " + " | ".join(json.dumps(s) for s in choices))
        if kind is StructuredKind.GRAMMAR:
            return c.compile_grammar(source)
        if kind is StructuredKind.STRUCTURAL_TAG:  # the tools' parameter schemas inside
            ignored = unenforced_keywords(json.loads(source))
            if ignored:
                raise GrammarError(f"xgrammar does not enforce {', '.join(sorted(ignored))}")
            return c.compile_structural_tag(source)
        raise GrammarError(f"unknown constraint kind {kind}")


@dataclass(frozen=True)
class XGrammarGrammar:
    compiled: Any  # xgrammar.CompiledGrammar
    vocab_size: int
    stats: StructuredStats
    backend: str = "xgrammar"

    def new_matcher(self) -> XGrammarMatcher:
        import xgrammar as xgr

        # max_rollback_tokens=-1: unlimited (rejected speculative tokens can be undone).
        return XGrammarMatcher(xgr.GrammarMatcher(self.compiled, max_rollback_tokens=-1))


class XGrammarMatcher:
    def __init__(self, matcher: Any) -> None:
        self._m = matcher

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        self._m.fill_next_token_bitmask(bitmask, row)

    def accept(self, token_id: int) -> bool:
        return bool(self._m.accept_token(token_id))

    def rollback(self, num_tokens: int) -> None:
        self._m.rollback(num_tokens)

    def is_terminated(self) -> bool:
        return bool(self._m.is_terminated())


class LLGuidanceBackend:
    """Fallback. Its tokenizer takes ~0.4 s to build, so it is built on first use."""

    name = "llguidance"

    def __init__(self, hf_tokenizer: Any, vocab_size: int, stop_token_ids: list[int]) -> None:
        self._hf = hf_tokenizer
        self.vocab_size = vocab_size
        self._eos = stop_token_ids[0] if stop_token_ids else None
        self._tokenizer: Any = None

    def warm_up(self) -> None:
        """Build the tokenizer now rather than at the first compile."""
        self._lltokenizer()

    def _lltokenizer(self) -> Any:
        if self._tokenizer is None:
            import llguidance.hf

            self._tokenizer = llguidance.hf.from_tokenizer(
                self._hf, n_vocab=self.vocab_size, eos_token=self._eos
            )
        return self._tokenizer

    def compile(self, request: GrammarRequest, stats: StructuredStats) -> LLGuidanceGrammar:
        import llguidance

        grammar = self._grammar(request)
        tokenizer = self._lltokenizer()
        error = llguidance.LLMatcher.validate_grammar(grammar, tokenizer)
        if error and not error.startswith("WARNING"):
            raise GrammarError(error.strip())
        return LLGuidanceGrammar(tokenizer, grammar, self.vocab_size, stats)

    def _grammar(self, request: GrammarRequest) -> str:
        from llguidance import LLMatcher

        kind, source = request.kind, request.source
        if kind is StructuredKind.JSON_SCHEMA:
            options = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
            return LLMatcher.grammar_from_json_schema(source, defaults=options)  # type: ignore[arg-type]
        if kind is StructuredKind.REGEX:
            return LLMatcher.grammar_from_regex(source)
        if kind is StructuredKind.GRAMMAR:
            return LLMatcher.grammar_from_lark(source)
        raise GrammarError(f"llguidance does not take {kind.value}")


@dataclass(frozen=True)
class LLGuidanceGrammar:
    tokenizer: Any  # llguidance.LLTokenizer
    grammar: str
    vocab_size: int
    stats: StructuredStats
    backend: str = "llguidance"

    def new_matcher(self) -> LLGuidanceMatcher:
        import llguidance

        return LLGuidanceMatcher(llguidance.LLMatcher(self.tokenizer, self.grammar))


class LLGuidanceMatcher:
    def __init__(self, matcher: Any) -> None:
        import llguidance.numpy

        self._m = matcher
        self._fill = llguidance.numpy.fill_next_token_bitmask

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        self._fill(self._m, bitmask.numpy(), row)  # the numpy view shares the tensor's memory

    def accept(self, token_id: int) -> bool:
        return bool(self._m.consume_token(token_id)) and not self._m.is_error()

    def rollback(self, num_tokens: int) -> None:
        self._m.rollback(num_tokens)

    def is_terminated(self) -> bool:
        return bool(self._m.is_stopped())
