"""GrammarRequest -> StructuredSpec: xgrammar first, llguidance for what it rejects, cached.

Compiles run on the compiler's own thread (`compile_async`), never on the engine thread
or the event loop: a cold JSON Schema costs milliseconds, a large one much more. The
cache is keyed by the request (kind + canonical source), so a schema sent by every
request compiles once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from warpserve.structured.backends import LLGuidanceBackend, XGrammarBackend
from warpserve.structured.spec import (
    CompiledGrammar,
    GrammarError,
    GrammarRequest,
    StructuredKind,
    StructuredSpec,
    StructuredStats,
)

logger = logging.getLogger(__name__)

# What llguidance may take over after xgrammar rejects it (choice and structural tags are
# built by warpserve and only xgrammar has structural tags).
_FALLBACK_KINDS = frozenset(
    {StructuredKind.JSON_SCHEMA, StructuredKind.REGEX, StructuredKind.GRAMMAR}
)


class Backend(Protocol):
    name: str

    def compile(self, request: GrammarRequest, stats: StructuredStats) -> CompiledGrammar: ...


class GrammarCompiler:
    def __init__(
        self, primary: Backend, fallback: Backend | None = None, max_entries: int = 256
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.max_entries = max_entries
        self.stats = StructuredStats()
        self._cache: OrderedDict[GrammarRequest, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="warpserve-grammar")

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, max_entries: int = 256) -> GrammarCompiler:
        """tokenizer: a warpserve Tokenizer (its `hf`, `vocab_size`, `eos_token_ids`)."""
        args = (tokenizer.hf, tokenizer.vocab_size, sorted(tokenizer.eos_token_ids))
        try:
            primary: Backend = XGrammarBackend(*args)
        except ImportError:  # scripts/setup.sh installs it (--no-deps: no triton)
            logger.warning("xgrammar is not installed: llguidance compiles every grammar")
            return cls(LLGuidanceBackend(*args), None, max_entries)
        return cls(primary, LLGuidanceBackend(*args), max_entries)

    def compile(self, request: GrammarRequest) -> StructuredSpec:
        """Raises GrammarError naming the problem when no backend accepts the request."""
        with self._lock:
            grammar = self._cache.get(request)
            if grammar is not None:
                self._cache.move_to_end(request)
                self.stats.add(num_cache_hits=1)
                return StructuredSpec(request, grammar)
        started = time.perf_counter()
        try:
            grammar = self._compile(request)
        finally:
            self.stats.add(num_compiles=1, compile_seconds=time.perf_counter() - started)
        with self._lock:
            self._cache[request] = grammar
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return StructuredSpec(request, grammar)

    async def compile_async(self, request: GrammarRequest) -> StructuredSpec:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.compile, request)

    def _compile(self, request: GrammarRequest) -> CompiledGrammar:
        try:
            return self.primary.compile(request, self.stats)
        except GrammarError as primary_error:
            if self.fallback is None or request.kind not in _FALLBACK_KINDS:
                raise
            try:
                grammar = self.fallback.compile(request, self.stats)
            except GrammarError as fallback_error:
                raise GrammarError(
                    f"{primary_error} ({self.fallback.name}: {fallback_error})"
                ) from None
            self.stats.add(num_fallbacks=1)
            return grammar

    def close(self) -> None:
        self._pool.shutdown(wait=False)
