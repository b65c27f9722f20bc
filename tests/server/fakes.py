"""A fake engine and embedding service, so every server behaviour is testable in ms.

FakeEngine implements `EngineClient` with a real bounded waiting queue, a KV block pool,
aborts that free blocks at the next step, and deterministic "generation" over a toy
byte-level tokenizer that honours max_tokens, stop, n, seed and logprobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from warpserve.engine.protocol import (
    EngineDeadError,
    EngineLiveness,
    EngineOverloadedError,
    EngineStats,
    InputTooLongError,
)
from warpserve.outputs import CompletionOutput, RequestMetrics, RequestOutput, TokenLogprob
from warpserve.request import FinishReason, SamplingParams

ALPHABET = b"abcdefgh ijklmnop qrstuvw xyz"


class ToyTokenizer:
    """One token per UTF-8 byte (ids 0..255); 256 is BOS and 257 EOS."""

    BOS, EOS = 256, 257
    vocab_size = 258
    eos_token_ids = frozenset({EOS})

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([self.BOS] if add_special_tokens else []) + list(text.encode())

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        text = bytes(t for t in token_ids if t < 256).decode("utf-8", errors="replace")
        if not skip_special_tokens and token_ids and token_ids[-1] == self.EOS:
            text += "</s>"
        return text

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """One format for every chat (template kwargs such as `tools` are ignored)."""
        turns = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        return turns + ("<|assistant|>" if add_generation_prompt else "")


@dataclass
class _Seq:
    index: int
    rng: random.Random | None  # None: greedy
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    text: str = ""
    num_blocks: int = 0


@dataclass
class _Req:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    seqs: list[_Seq]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    arrival: float = field(default_factory=time.perf_counter)
    first_scheduled: float | None = None
    first_token: float | None = None

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.seqs)


class FakeEngine:
    def __init__(
        self,
        *,
        max_running: int = 8,
        max_waiting: int = 8,
        num_blocks: int = 256,
        block_size: int = 4,
        max_model_len: int = 256,
        step_s: float = 0.002,
        model_name: str = "fake-model",
    ) -> None:
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.tokenizer = ToyTokenizer()
        self.vocab_size = ToyTokenizer.vocab_size
        self.step_s = step_s
        self._max_running, self._max_waiting = max_running, max_waiting
        self._block_size, self._num_blocks = block_size, num_blocks
        self._free_blocks = num_blocks
        self._waiting: list[_Req] = []
        self._running: list[_Req] = []
        self._aborts: set[str] = set()
        self._wake: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self.is_dead = False
        self.is_stalled = False
        self.num_preemptions = 0
        self.aborted_ids: list[str] = []
        self.submitted: list[tuple[str, list[int], SamplingParams]] = []

    # -- EngineClient -----------------------------------------------------------------

    async def generate(
        self, prompt: str | list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        req = self._admit(prompt, params, request_id, bypass_queue=False)
        try:
            while True:
                item = await req.queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if item.finished:
                    return
        finally:
            if not req.finished:
                self._aborts.add(request_id)
                self._poke()

    async def abort(self, request_id: str) -> None:
        self._aborts.add(request_id)
        self._poke()

    async def check_health(self, timeout_s: float) -> None:
        if self.is_dead:
            raise EngineDeadError("the fake engine was killed")
        req = self._admit([1, 2, 3], SamplingParams(max_tokens=1), f"health-{time.time_ns()}", True)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    item = await req.queue.get()
                    if isinstance(item, Exception):
                        raise EngineDeadError(str(item))
                    if item.finished:
                        return
        except TimeoutError:
            self._aborts.add(req.request_id)
            raise EngineDeadError(f"no token within {timeout_s} s") from None

    def liveness(self) -> EngineLiveness:
        return EngineLiveness(is_alive=not self.is_dead, num_restarts=0)

    def stats(self) -> EngineStats:
        if self.is_dead:
            raise EngineDeadError("the fake engine was killed")
        used = self._num_blocks - self._free_blocks
        return EngineStats(
            num_running=len(self._running),
            num_waiting=len(self._waiting),
            kv_cache_usage=used / self._num_blocks,
            prefix_cache_queries=0,
            prefix_cache_hits=0,
            num_preemptions=self.num_preemptions,
            num_free_blocks=self._free_blocks,
            num_total_blocks=self._num_blocks,
        )

    # -- test controls ------------------------------------------------------------------

    def kill(self) -> None:
        self.is_dead = True
        for req in self._waiting + self._running:
            req.queue.put_nowait(EngineDeadError("the fake engine was killed"))
        self._waiting.clear()
        self._running.clear()

    @property
    def num_free_blocks(self) -> int:
        return self._free_blocks

    @property
    def num_total_blocks(self) -> int:
        return self._num_blocks

    # -- the loop -------------------------------------------------------------------------

    def _admit(
        self, prompt: str | list[int], params: SamplingParams, request_id: str, bypass_queue: bool
    ) -> _Req:
        if self.is_dead:
            raise EngineDeadError("the fake engine was killed")
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("prompt must not be empty")
        if any(not 0 <= t < ToyTokenizer.vocab_size for t in ids):
            raise ValueError(f"prompt token ids must be in [0, {ToyTokenizer.vocab_size})")
        if len(ids) >= self.max_model_len:
            raise ValueError(f"prompt has {len(ids)} tokens; the context is {self.max_model_len}")
        if not bypass_queue and len(self._waiting) >= self._max_waiting:
            raise EngineOverloadedError("the waiting queue is full")
        seqs = [_Seq(i, _rng(params, ids, i)) for i in range(params.n)]
        for seq in seqs:
            seq.logprobs = [] if params.logprobs is not None else None
        req = _Req(request_id, ids, params, seqs)
        self.submitted.append((request_id, ids, params))
        self._waiting.append(req)
        self._ensure_loop()
        self._poke()
        return req

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._wake = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _loop(self) -> None:
        assert self._wake is not None
        while not self.is_dead:
            if not (self._waiting or self._running or self._aborts):
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.step_s)
            if not self.is_stalled and not self.is_dead:
                self._step()

    def _step(self) -> None:
        self._apply_aborts()
        self._schedule()
        for req in list(self._running):
            for seq in req.seqs:
                if seq.finish_reason is None and self._grow(seq, req):
                    self._sample(req, seq)
            req.queue.put_nowait(self._output(req))
            if req.finished:
                self._release(req)

    def _apply_aborts(self) -> None:
        aborts, self._aborts = self._aborts, set()
        for req in [r for r in self._waiting + self._running if r.request_id in aborts]:
            for seq in req.seqs:
                seq.finish_reason = seq.finish_reason or FinishReason.ABORT
            self._release(req)
            self.aborted_ids.append(req.request_id)
            req.queue.put_nowait(self._output(req))

    def _schedule(self) -> None:
        while self._waiting and len(self._running) < self._max_running:
            req = self._waiting[0]
            blocks = math.ceil(len(req.prompt_ids) / self._block_size)
            if blocks * len(req.seqs) > self._free_blocks:
                return
            self._waiting.pop(0)
            for seq in req.seqs:
                seq.num_blocks = blocks
            self._free_blocks -= blocks * len(req.seqs)
            req.first_scheduled = time.perf_counter()
            self._running.append(req)

    def _grow(self, seq: _Seq, req: _Req) -> bool:
        """Room in the KV pool for one more token; False (a preemption) if none."""
        needed = math.ceil((len(req.prompt_ids) + len(seq.token_ids) + 1) / self._block_size)
        if needed > seq.num_blocks:
            if self._free_blocks == 0:
                self.num_preemptions += 1
                return False
            self._free_blocks -= 1
            seq.num_blocks += 1
        return True

    def _release(self, req: _Req) -> None:
        for seq in req.seqs:
            self._free_blocks += seq.num_blocks
            seq.num_blocks = 0
        for queue in (self._waiting, self._running):
            if req in queue:
                queue.remove(req)

    def _sample(self, req: _Req, seq: _Seq) -> None:
        params = req.params
        step = len(seq.token_ids)
        wants_eos = b"EOS" in bytes(t for t in req.prompt_ids if t < 256) and step >= 3
        if wants_eos and not params.ignore_eos and step >= params.min_tokens:
            token = ToyTokenizer.EOS
        elif seq.rng is None:
            token = ALPHABET[_digest(req.prompt_ids, step) % len(ALPHABET)]
        else:
            token = seq.rng.choice(ALPHABET)
        seq.token_ids.append(token)
        if req.first_token is None:
            req.first_token = time.perf_counter()
        if seq.logprobs is not None:
            seq.logprobs.append(_logprob(token, step, params.logprobs or 0))
        self._finish_if_done(req, seq, token)

    def _finish_if_done(self, req: _Req, seq: _Seq, token: int) -> None:
        params = req.params
        seq.text = self.tokenizer.decode(seq.token_ids)
        if token in ToyTokenizer.eos_token_ids:
            seq.finish_reason = FinishReason.STOP
        elif token in params.stop_token_ids:
            seq.finish_reason, seq.stop_reason = FinishReason.STOP, token
        else:
            self._check_stop_strings(seq, params)
        total = len(req.prompt_ids) + len(seq.token_ids)
        if seq.finish_reason is None and (
            len(seq.token_ids) >= params.max_tokens or total >= self.max_model_len
        ):
            seq.finish_reason = FinishReason.LENGTH

    def _check_stop_strings(self, seq: _Seq, params: SamplingParams) -> None:
        hits = [(seq.text.find(s), s) for s in params.stop if s in seq.text]
        if hits:
            where, stop = min(hits)
            keep = where + (len(stop) if params.include_stop_str_in_output else 0)
            seq.text = seq.text[:keep]
            seq.finish_reason, seq.stop_reason = FinishReason.STOP, stop

    def _output(self, req: _Req) -> RequestOutput:
        now = time.perf_counter()
        outputs = [
            CompletionOutput(
                index=seq.index,
                text=_visible(seq, req.params),
                token_ids=list(seq.token_ids),
                logprobs=None if seq.logprobs is None else list(seq.logprobs),
                finish_reason=seq.finish_reason,
                stop_reason=seq.stop_reason,
            )
            for seq in req.seqs
        ]
        metrics = RequestMetrics(
            arrival_time=req.arrival,
            queue_time=(req.first_scheduled or now) - req.arrival,
            time_to_first_token=None if req.first_token is None else req.first_token - req.arrival,
            finished_time=now if req.finished else None,
        )
        return RequestOutput(req.request_id, req.prompt_ids, outputs, req.finished, metrics)


def _rng(params: SamplingParams, prompt_ids: list[int], index: int) -> random.Random | None:
    if params.is_greedy:
        return None
    if params.seed is None:
        return random.Random()
    return random.Random(_digest(prompt_ids, params.seed + index))


def _digest(prompt_ids: list[int], salt: int) -> int:
    data = bytes(str((prompt_ids, salt)), "ascii")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def _logprob(token: int, step: int, num_top: int) -> TokenLogprob:
    chosen = -0.25 - 0.01 * (step % 7)
    others = [t for t in ALPHABET[:6] if t != token]
    top = [(token, chr(token), chosen)] + [
        (t, chr(t), chosen - 0.5 * (i + 1)) for i, t in enumerate(others)
    ]
    text = "" if token >= 256 else chr(token)
    return TokenLogprob(token, text, chosen, top[:num_top])


def _visible(seq: _Seq, params: SamplingParams) -> str:
    """Hold back a tail that may still become a stop string, as the real detokenizer does."""
    if seq.finish_reason is not None:
        return seq.text
    for length in range(max((len(s) for s in params.stop), default=1) - 1, 0, -1):
        tail = seq.text[-length:]
        if any(s.startswith(tail) for s in params.stop):
            return seq.text[:-length]
    return seq.text


@dataclass
class FakeEmbedder:
    """Deterministic 8-dimensional "embeddings", a word-overlap reranker, a 2-way classifier."""

    task: str = "embed"
    model_name: str = "fake-embed"
    dim: int = 8
    max_input_words: int = 256  # the truncation rule, with words for tokens
    calls: list[list[str]] = field(default_factory=list)
    is_dead: bool = False  # a test sets it: /health must then answer 503

    async def embed(
        self, texts: list[str], normalize: bool, truncate: bool
    ) -> tuple[list[list[float]], int]:
        self._check_lengths(texts, truncate)
        self.calls.append(list(texts))
        vectors = [self._vector(t, normalize) for t in texts]
        return vectors, sum(len(t.split()) for t in texts)

    async def rerank(self, query: str, texts: list[str], truncate: bool) -> list[float]:
        self._check_lengths([f"{query} {text}" for text in texts], truncate)
        words = set(query.lower().split())
        return [float(len(words & set(t.lower().split()))) - 0.5 for t in texts]

    async def classify(self, texts: list[str], truncate: bool) -> list[list[tuple[str, float]]]:
        self._check_lengths(texts, truncate)
        results = []
        for text in texts:
            positive = 0.9 if "good" in text.lower() else 0.2
            results.append([("POSITIVE", positive), ("NEGATIVE", 1.0 - positive)])
        return [sorted(r, key=lambda pair: -pair[1]) for r in results]

    def is_alive(self) -> bool:
        return not self.is_dead

    async def close(self) -> None:
        return None

    def _check_lengths(self, texts: list[str], truncate: bool) -> None:
        for index, text in enumerate(texts):
            num_words = len(text.split())
            if num_words > self.max_input_words and not truncate:
                raise InputTooLongError(num_words, self.max_input_words, index)

    def _vector(self, text: str, normalize: bool) -> list[float]:
        raw = hashlib.sha256(text.encode()).digest()[: self.dim]
        vector = [b / 255.0 - 0.5 for b in raw]
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector] if normalize else vector
