"""What a constrained request carries from the server to the sampler (no torch).

A `StructuredSpec` exists only compiled: the server asks the compiler (compiler.py) for
one before it submits the request, so a bad schema is a 400 before admission and the
engine never holds a constraint it cannot enforce.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol


class StructuredKind(str, enum.Enum):  # noqa: UP042 (the value is the API's word)
    JSON_OBJECT = "json_object"  # any JSON object
    JSON_SCHEMA = "json_schema"  # a JSON Schema (OpenAI strict, vLLM guided_json)
    REGEX = "regex"
    CHOICE = "choice"  # one of a list of strings (source: a JSON array)
    GRAMMAR = "grammar"  # EBNF (xgrammar's GBNF) or Lark (llguidance)
    STRUCTURAL_TAG = "structural_tag"  # xgrammar structural tag JSON (tool calls)


class GrammarError(ValueError):
    """A schema, regex or grammar no backend accepts; the message names the problem."""


class Matcher(Protocol):
    """One request's position in its grammar; owned by the sampler."""

    def fill_bitmask(self, bitmask: Any, row: int) -> None:
        """Write the allowed next tokens into row `row` of an int32 [B, ceil(V/32)] tensor."""
        ...

    def accept(self, token_id: int) -> bool:
        """Advance over one token; False if the grammar does not allow it (state unchanged)."""
        ...

    def rollback(self, num_tokens: int) -> None:
        """Undo the last num_tokens accepted tokens (rejected speculative tokens)."""
        ...

    def is_terminated(self) -> bool:
        """The grammar is complete and a stop token has been accepted."""
        ...


class CompiledGrammar(Protocol):
    # Read-only (properties), so frozen dataclasses implement it.
    @property
    def backend(self) -> str: ...  # "xgrammar" | "llguidance"

    @property
    def vocab_size(self) -> int: ...  # bitmask width in tokens (the tokenizer's vocabulary)

    @property
    def stats(self) -> StructuredStats: ...

    def new_matcher(self) -> Matcher: ...


@dataclass
class StructuredStats:
    """Counters shared by a compiler, its grammars and the sampler; read by /metrics.

    Written from the engine thread (masks) and the compile thread (compiles); plain
    float/int updates under one lock, read at scrape time.
    """

    num_requests: int = 0  # constrained requests submitted
    num_compiles: int = 0  # cache misses
    num_cache_hits: int = 0
    num_fallbacks: int = 0  # compiled by llguidance after xgrammar rejected the input
    compile_seconds: float = 0.0
    num_mask_steps: int = 0  # sampler steps with at least one constrained row
    num_masked_rows: int = 0
    mask_seconds: float = 0.0  # fill + apply, all constrained rows of those steps
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass(frozen=True)
class GrammarRequest:
    """What the request asked for, before compilation; hashable, so it keys the cache."""

    kind: StructuredKind
    source: str  # schema / structural tag as canonical JSON, the regex, the grammar text


@dataclass(frozen=True)
class StructuredSpec:
    """A compiled constraint; `SamplingParams.structured`."""

    request: GrammarRequest
    grammar: CompiledGrammar = field(compare=False, repr=False)

    @property
    def kind(self) -> StructuredKind:
        return self.request.kind
