"""The scheduler: which requests run each step, and how many of their tokens. Pure Python.

There is no prefill phase and no decode phase: every step gives each chosen request a
number of tokens, from `num_computed_tokens` on. A decode is 1 token (the last sampled),
a prefill is the prompt less its cached prefix, and a chunk is whatever the token budget
leaves. Running requests go first, oldest first; then waiting ones in FIFO order. When a
running request cannot get a block, the newest running request is preempted: its blocks
are freed and it goes back to the front of the queue, to recompute prompt and outputs.

The engine calls, once per step and in this order: `schedule()`, the model runner, then
`update_from_output()`. One owner: only the engine loop calls into the scheduler.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from warpserve.config import CacheConfig, SchedulerConfig
from warpserve.kv_cache.manager import KVCacheManager
from warpserve.request import FinishReason, Request, RequestStatus
from warpserve.scheduler.output import DraftCandidate, ScheduledSequence, SchedulerOutput


class QueueFullError(RuntimeError):
    """max_waiting requests are already waiting: refuse now (HTTP 429), retry later."""


@dataclass(frozen=True)
class SchedulerStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float  # fraction of KV blocks held by requests, 0..1
    prefix_cache_queries: int  # tokens looked up in the prefix cache
    prefix_cache_hits: int  # of which found
    num_preemptions: int
    num_free_blocks: int
    num_total_blocks: int


@dataclass
class _StepPlan:
    num_tokens_left: int
    sequences: list[ScheduledSequence] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        scheduler_config: SchedulerConfig,
        cache_config: CacheConfig,
        num_blocks: int,
        max_model_len: int,
        num_lookahead_tokens: int = 0,
    ) -> None:
        """num_lookahead_tokens: the most draft tokens a request may get per step
        (speculative decoding); 0 turns drafts off."""
        self.config = scheduler_config
        self._cache_config = cache_config
        self.max_model_len = max_model_len
        self.num_lookahead_tokens = num_lookahead_tokens
        self.kv_cache = KVCacheManager(
            num_blocks, cache_config.block_size, cache_config.enable_prefix_caching
        )
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # by arrival time, so the newest is last
        self.num_preemptions = 0
        self._requests: dict[str, Request] = {}  # waiting and running
        self._freed_request_ids: list[str] = []
        # Draft tokens for each request's next step; consumed when it is scheduled.
        self._draft_token_ids: dict[str, list[int]] = {}
        # Requests that were in a step that raised: each runs alone until it samples.
        self._suspects: set[str] = set()

    # ---- requests in and out ---------------------------------------------------------

    def add_request(self, request: Request) -> None:
        self.add_requests([request])

    def add_requests(self, requests: Sequence[Request]) -> None:
        """Queue requests, all or none (the n children of one prompt go together).

        ValueError names what can never run; QueueFullError when the queue is full.
        Lowers each request's max_tokens so that the sequence fits max_model_len.
        """
        if len(self.waiting) + len(requests) > self.config.max_waiting:
            raise QueueFullError(
                f"{len(self.waiting)} requests are waiting (max_waiting="
                f"{self.config.max_waiting}); retry later"
            )
        request_ids = {request.request_id for request in requests}
        if len(request_ids) < len(requests) or not request_ids.isdisjoint(self._requests):
            raise ValueError(f"request ids must be unique: {sorted(request_ids)}")
        max_tokens = [self._check_request(request) for request in requests]
        for request, request_max_tokens in zip(requests, max_tokens, strict=True):
            request.max_tokens = request_max_tokens
            request.status = RequestStatus.WAITING
            self._requests[request.request_id] = request
            self.waiting.append(request)

    def finish_requests(
        self,
        request_ids: str | Iterable[str],
        reason: FinishReason,
        stop_reason: str | int | None = None,
    ) -> None:
        """Finish waiting or running requests now (abort, a stop string); frees blocks.

        Unknown or already finished ids are ignored: a client may go away just as its
        request finishes.
        """
        if isinstance(request_ids, str):
            request_ids = [request_ids]
        for request_id in request_ids:
            request = self._requests.get(request_id)
            if request is None:
                continue
            if request.status is RequestStatus.RUNNING:
                self.running.remove(request)
            else:
                self.waiting.remove(request)
            self._finish(request, reason, stop_reason)

    def finish_at_stop_string(self, request: Request, num_output_tokens: int, stop: str) -> None:
        """A stop string ended the request at its num_output_tokens-th output: drop the
        tokens after it (accepted drafts past the stop) and finish it with STOP, even if
        a later token of the same step already finished it (EOS, the length limit)."""
        request.truncate_output(num_output_tokens)
        if request.is_finished:
            request.finish_reason, request.stop_reason = FinishReason.STOP, stop
        else:
            self.finish_requests(request.request_id, FinishReason.STOP, stop)

    def fresh(self) -> Scheduler:
        """A scheduler with the same settings and nothing in it: every block free."""
        return Scheduler(
            self.config,
            self._cache_config,
            self.kv_cache.num_total_blocks,
            self.max_model_len,
            self.num_lookahead_tokens,
        )

    def fail_step(self, scheduler_output: SchedulerOutput) -> list[str]:
        """The model runner raised on this step: return the requests to blame, and put
        the others back to run again, each alone until it has sampled once.

        A request is to blame when it ran alone (nobody else could have caused it). The
        rest are preempted (blocks freed, recomputed later, so nothing half-written is
        kept) and become suspects: `schedule()` gives a suspect a step of its own, so a
        fault that follows one request fails that request only. Nothing here finishes a
        request; the caller finishes the ones returned.
        """
        scheduled = [self._requests.get(s.request_id) for s in scheduler_output.sequences]
        requests = [r for r in scheduled if r is not None and not r.is_finished]
        if len(requests) == 1:
            return [requests[0].request_id]
        for request in requests:
            if request.status is RequestStatus.RUNNING:
                self.running.remove(request)
                self._preempt(request)
            self._suspects.add(request.request_id)
        return []

    def get_request(self, request_id: str) -> Request | None:
        return self._requests.get(request_id)

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    # ---- one step --------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        plan = _StepPlan(num_tokens_left=self.config.max_num_batched_tokens)
        suspect = self._first_suspect()
        if suspect is not None:
            self._schedule_alone(plan, suspect)
        else:
            num_preemptions_before = self.num_preemptions
            self._schedule_running(plan)
            # Admitting new requests right after preempting would only preempt them again.
            if self.num_preemptions == num_preemptions_before:
                self._schedule_waiting(plan)
        freed_request_ids, self._freed_request_ids = self._freed_request_ids, []
        return SchedulerOutput(
            sequences=plan.sequences,
            num_batched_tokens=self.config.max_num_batched_tokens - plan.num_tokens_left,
            freed_request_ids=freed_request_ids,
        )

    def update_from_output(
        self, scheduler_output: SchedulerOutput, sampled: dict[str, list[int]]
    ) -> list[Request]:
        """Record a step's results; return the requests that finished in it.

        sampled: for each sequence scheduled with do_sample, the tokens it accepted this
        step (one without speculative decoding).
        """
        finished: list[Request] = []
        for sequence in scheduler_output.sequences:
            request = self._requests.get(sequence.request_id)
            if request is None or request.status is not RequestStatus.RUNNING:
                continue  # finished by finish_requests while the step ran
            num_drafts = len(sequence.draft_token_ids)
            request.num_computed_tokens += len(sequence.token_ids) - num_drafts
            self.kv_cache.cache_computed_blocks(request)
            if not sequence.do_sample:
                continue
            self._suspects.discard(request.request_id)  # it ran and sampled: cleared
            token_ids = sampled[request.request_id]
            if self._append_sampled(request, token_ids):
                finished.append(request)
            elif num_drafts:
                self._accept_drafts(request, sequence.draft_token_ids, token_ids)
        if finished:
            self.running = [request for request in self.running if not request.is_finished]
        return finished

    # ---- speculative decoding --------------------------------------------------------

    def draft_candidates(self) -> list[DraftCandidate]:
        """The running requests that may take draft tokens for their next step."""
        candidates = []
        for request in self.running:
            max_num_drafts = self._max_num_drafts(request)
            if max_num_drafts > 0:
                candidates.append(
                    DraftCandidate(
                        request_id=request.request_id,
                        token_ids=request.all_token_ids,
                        block_ids=list(self.kv_cache.get_block_ids(request.request_id)),
                        max_num_draft_tokens=max_num_drafts,
                        sampling_params=request.sampling_params,
                        seed=request.seed,
                    )
                )
        return candidates

    def set_draft_token_ids(self, draft_token_ids: dict[str, list[int]]) -> None:
        """Drafts for the next step, verified when each request is next scheduled."""
        for request_id, token_ids in draft_token_ids.items():
            request = self._requests.get(request_id)
            if request is not None and token_ids:
                assert len(token_ids) <= self._max_num_drafts(request), "too many drafts"
                self._draft_token_ids[request_id] = list(token_ids)

    def _max_num_drafts(self, request: Request) -> int:
        """0 unless decoding; then capped by max_tokens and the lookahead slots held.
        Constrained requests are never drafted: their grammar decides each next token."""
        if request.num_tokens - request.num_computed_tokens != 1:
            return 0
        if request.sampling_params.structured is not None:
            return 0
        num_slots = len(self.kv_cache.get_block_ids(request.request_id)) * (
            self.kv_cache.block_size
        )
        # A step yields the accepted drafts plus one token; a drafting model writes K/V
        # for the last token and the first k - 1 drafts, up to position num_tokens + k - 2.
        num_left = request.max_tokens - request.num_output_tokens - 1
        num_free_slots = num_slots - request.num_tokens + 1
        return max(0, min(self.num_lookahead_tokens, num_left, num_free_slots))

    def _accept_drafts(self, request: Request, draft_ids: list[int], token_ids: list[int]) -> None:
        """Roll num_computed_tokens back to the accepted drafts; the rest were rejected.

        The step wrote K/V for every draft. The accepted ones equal the tokens just
        appended, so their K/V stand and their blocks may enter the prefix cache; the
        rejected ones' slots stay in the block table and are overwritten by later steps.
        """
        num_accepted = len(token_ids) - 1
        assert 0 <= num_accepted <= len(draft_ids), "more tokens than drafts + 1"
        assert token_ids[:num_accepted] == draft_ids[:num_accepted], "accepted != drafts"
        request.num_computed_tokens += num_accepted
        self.kv_cache.cache_computed_blocks(request)

    # ---- stats -----------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            num_running=self.num_running,
            num_waiting=self.num_waiting,
            kv_cache_usage=self.kv_cache.usage,
            prefix_cache_queries=self.kv_cache.prefix_cache_queries,
            prefix_cache_hits=self.kv_cache.prefix_cache_hits,
            num_preemptions=self.num_preemptions,
            num_free_blocks=self.kv_cache.num_free_blocks,
            num_total_blocks=self.kv_cache.num_total_blocks,
        )

    # ---- scheduling ------------------------------------------------------------------

    def _schedule_running(self, plan: _StepPlan) -> None:
        index = 0
        while index < len(self.running) and plan.num_tokens_left > 0:
            request = self.running[index]
            num_new_tokens = min(self._num_tokens_to_compute(request), plan.num_tokens_left)
            num_new_tokens = self._allocate_or_preempt(request, num_new_tokens)
            if num_new_tokens:
                self._add_to_step(plan, request, num_new_tokens)
                index += 1

    def _first_suspect(self) -> Request | None:
        if not self._suspects:
            return None
        for request in (*self.running, *self.waiting):
            if request.request_id in self._suspects:
                return request
        return None

    def _schedule_alone(self, plan: _StepPlan, request: Request) -> None:
        """A step with this one request, running (mid-prefill) or at the queue's front."""
        if request.status is RequestStatus.RUNNING:
            num_new_tokens = min(self._num_tokens_to_compute(request), plan.num_tokens_left)
            num_new_tokens = self._allocate_or_preempt(request, num_new_tokens)
            if num_new_tokens:
                self._add_to_step(plan, request, num_new_tokens)
            return
        self.waiting.remove(request)
        self.waiting.appendleft(request)
        self._schedule_waiting(plan, max_num_requests=1)

    def _schedule_waiting(self, plan: _StepPlan, max_num_requests: int | None = None) -> None:
        skipped: list[Request] = []
        while (
            self.waiting
            and plan.num_tokens_left > 0
            and len(self.running) < self.config.max_num_seqs
            and (max_num_requests is None or len(plan.sequences) < max_num_requests)
        ):
            request = self.waiting.popleft()
            cached_block_ids, num_cached_tokens = self.kv_cache.get_computed_blocks(request)
            if self.kv_cache.is_prefix_pending(request, num_cached_tokens):
                skipped.append(request)
                continue
            num_new_tokens = self._num_prefill_tokens(
                request, num_cached_tokens, plan.num_tokens_left
            )
            lookahead = self._num_lookahead(request, num_cached_tokens + num_new_tokens)
            if num_new_tokens == 0 or not self.kv_cache.allocate_slots(
                request, num_new_tokens, cached_block_ids, lookahead
            ):
                self.waiting.appendleft(request)  # FIFO: nobody overtakes it
                break
            self._admit(request, num_cached_tokens)
            self._add_to_step(plan, request, num_new_tokens)
        self.waiting.extendleft(reversed(skipped))

    def _num_tokens_to_compute(self, request: Request) -> int:
        """Known tokens not yet in the KV cache (1 when decoding, more mid-prefill), plus
        the draft tokens of a decoding request."""
        num_tokens = request.num_tokens - request.num_computed_tokens
        assert num_tokens > 0, f"running request {request.request_id} has nothing to compute"
        if num_tokens == 1:
            num_tokens += len(self._draft_token_ids.get(request.request_id, ()))
        return num_tokens

    def _num_lookahead(self, request: Request, num_tokens_after_step: int) -> int:
        """Slots past this step's tokens for the drafts of the next one, never more than
        the request can ever use (admission sized the cache for that)."""
        if not self.num_lookahead_tokens:
            return 0
        max_num_slots = request.num_prompt_tokens + request.max_tokens - 1
        return max(0, min(self.num_lookahead_tokens, max_num_slots - num_tokens_after_step))

    def _num_prefill_tokens(
        self, request: Request, num_cached_tokens: int, num_tokens_left: int
    ) -> int:
        """How many tokens a waiting request gets this step; 0 when it must keep waiting."""
        num_tokens = request.num_tokens - num_cached_tokens
        if num_tokens <= num_tokens_left:
            return num_tokens
        # A preempted request is chunked regardless of the setting: its prompt and outputs
        # together may exceed max_num_batched_tokens, and chunking never changes outputs.
        can_chunk = self.config.enable_chunked_prefill or request.status is RequestStatus.PREEMPTED
        return num_tokens_left if can_chunk else 0

    def _allocate_or_preempt(self, request: Request, num_new_tokens: int) -> int:
        """Find blocks for a running request, preempting the newest; the number of tokens
        it got (0 if it was preempted).

        Lookahead slots, then draft tokens, are given up before anyone is preempted.
        """
        num_known = min(num_new_tokens, request.num_tokens - request.num_computed_tokens)
        end = request.num_computed_tokens + num_new_tokens
        options = [(num_new_tokens, self._num_lookahead(request, end))]
        if options[0][1]:
            options.append((num_new_tokens, 0))
        if num_known < num_new_tokens:
            options.append((num_known, 0))
        while True:
            for num_tokens, lookahead in options:
                if self.kv_cache.allocate_slots(request, num_tokens, (), lookahead):
                    return num_tokens
            victim = self.running.pop()
            self._preempt(victim)
            if victim is request:
                return 0

    def _admit(self, request: Request, num_cached_tokens: int) -> None:
        if request.timings.first_scheduled is None:
            request.timings.first_scheduled = time.perf_counter()
            request.num_cached_tokens = num_cached_tokens
        request.status = RequestStatus.RUNNING
        request.num_computed_tokens = num_cached_tokens
        # By arrival, not admission: a resumed request is older than those that ran on,
        # and must not be the first victim again.
        bisect.insort(self.running, request, key=lambda r: r.arrival_time)

    def _add_to_step(self, plan: _StepPlan, request: Request, num_new_tokens: int) -> None:
        start = request.num_computed_tokens
        num_known = min(num_new_tokens, request.num_tokens - start)
        # The drafts that fit in the budget (allocation may have given up the others).
        draft_ids = self._draft_token_ids.pop(request.request_id, [])[: num_new_tokens - num_known]
        end = start + num_known
        plan.sequences.append(
            ScheduledSequence(
                request_id=request.request_id,
                token_ids=request.all_token_ids[start:end] + draft_ids,
                num_computed_tokens=start,
                block_ids=list(self.kv_cache.get_block_ids(request.request_id)),
                do_sample=end == request.num_tokens,
                sampling_params=request.sampling_params,
                prompt_token_ids=request.prompt_token_ids,
                output_token_ids=request.output_token_ids,
                seed=request.seed,
                draft_token_ids=draft_ids,
            )
        )
        plan.num_tokens_left -= num_new_tokens

    def _preempt(self, request: Request) -> None:
        """Free a running request's blocks; it recomputes prompt and outputs later."""
        self.kv_cache.free(request)
        self._draft_token_ids.pop(request.request_id, None)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        self.waiting.appendleft(request)
        self.num_preemptions += 1
        self._freed_request_ids.append(request.request_id)

    # ---- finishing -------------------------------------------------------------------

    def _append_sampled(self, request: Request, token_ids: list[int]) -> bool:
        """Append accepted tokens up to the first that stops the request; True if one did."""
        for token_id in token_ids:
            request.append_output_token_ids([token_id])
            if request.timings.first_token is None:
                request.timings.first_token = time.perf_counter()
            stop = self._stop_reason(request, token_id)
            if stop is not None:
                self._finish(request, *stop)
                return True
        return False

    def _stop_reason(
        self, request: Request, token_id: int
    ) -> tuple[FinishReason, int | None] | None:
        params = request.sampling_params
        if request.num_output_tokens >= params.min_tokens:
            if token_id in params.stop_token_ids:
                return FinishReason.STOP, token_id
            if not params.ignore_eos and token_id in request.eos_token_ids:
                return FinishReason.STOP, None
        # max_tokens was lowered at admission so that this also ends at max_model_len.
        if request.num_output_tokens >= request.max_tokens:
            return FinishReason.LENGTH, None
        return None

    def _finish(
        self, request: Request, reason: FinishReason, stop_reason: str | int | None
    ) -> None:
        """Mark finished and free the blocks; the caller removes it from its queue."""
        if request.status is RequestStatus.RUNNING:
            self._freed_request_ids.append(request.request_id)
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        request.stop_reason = stop_reason
        request.timings.finished = time.perf_counter()
        self.kv_cache.free(request)
        self._draft_token_ids.pop(request.request_id, None)
        self._suspects.discard(request.request_id)
        del self._requests[request.request_id]

    # ---- admission checks ------------------------------------------------------------

    def _check_request(self, request: Request) -> int:
        """Raise ValueError if the request can never run; return its capped max_tokens."""
        num_prompt_tokens = request.num_prompt_tokens
        if num_prompt_tokens == 0:
            raise ValueError("the prompt is empty")
        if num_prompt_tokens >= self.max_model_len:
            raise ValueError(
                f"prompt has {num_prompt_tokens} tokens, the context is {self.max_model_len}; "
                "shorten the prompt"
            )
        if not self.config.enable_chunked_prefill and (
            num_prompt_tokens > self.config.max_num_batched_tokens
        ):
            raise ValueError(
                f"prompt has {num_prompt_tokens} tokens, more than max_num_batched_tokens="
                f"{self.config.max_num_batched_tokens}; enable chunked prefill or raise it"
            )
        max_tokens = min(request.max_tokens, self.max_model_len - num_prompt_tokens)
        # The last sampled token is never fed back, so it needs no slot.
        num_blocks = self.kv_cache.num_blocks_for_tokens(num_prompt_tokens + max_tokens - 1)
        if num_blocks > self.kv_cache.num_total_blocks:
            raise ValueError(
                f"prompt and max_tokens need up to {num_blocks} KV blocks, the cache has "
                f"{self.kv_cache.num_total_blocks}; lower max_tokens or give the KV cache "
                "more memory"
            )
        return max_tokens
