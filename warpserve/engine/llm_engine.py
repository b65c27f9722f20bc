"""The engine: add_request / step / abort over the scheduler, the runner and detokenizers.

One thread owns an LLMEngine (the offline LLM facade, or the async engine's loop); nothing
here is thread-safe by design. A user request with n > 1 becomes n sequences that share
their prompt's KV blocks through the prefix cache.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import torch

from warpserve.config import EngineConfig
from warpserve.engine.detokenizer import IncrementalDetokenizer
from warpserve.engine.protocol import EngineStats
from warpserve.engine.setup import LoadedModel, load_model
from warpserve.outputs import CompletionOutput, RequestMetrics, RequestOutput, TokenLogprob
from warpserve.request import FinishReason, Request, SamplingParams
from warpserve.runner.setup import build_runner
from warpserve.sampling.processors import check_token_ids
from warpserve.sampling.sampler import Sampler
from warpserve.sampling.types import SampledToken
from warpserve.scheduler.scheduler import Scheduler

logger = logging.getLogger(__name__)


@dataclass
class _Sequence:
    """One of a request's n choices."""

    index: int
    request: Request
    detokenizer: IncrementalDetokenizer
    logprobs: list[TokenLogprob] | None


@dataclass
class _RequestGroup:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    sequences: list[_Sequence] = field(default_factory=list)
    arrival_time: float = field(default_factory=time.perf_counter)

    @property
    def finished(self) -> bool:
        return all(s.request.is_finished for s in self.sequences)


class LLMEngine:
    def __init__(self, loaded: LoadedModel, config: EngineConfig) -> None:
        self.config = config
        self.tokenizer = loaded.tokenizer
        self.model_name = loaded.name
        self.max_model_len = loaded.max_model_len
        self.vocab_size = loaded.vocab_size
        self.eos_token_ids = self.tokenizer.eos_token_ids
        cache = config.cache
        if loaded.is_fallback and cache.enable_prefix_caching:
            logger.info("prefix caching is off for Transformers-fallback models")
            cache = type(cache)(cache.block_size, cache.memory_gib, False)
        spec = config.speculative
        if loaded.is_fallback and spec.is_enabled:
            logger.warning("speculative decoding is off for Transformers-fallback models")
            spec = type(spec)()
        num_lookahead = spec.num_speculative_tokens if spec.is_enabled else 0
        self.scheduler = Scheduler(
            config.scheduler, cache, loaded.num_blocks, self.max_model_len, num_lookahead
        )
        sampler = Sampler(loaded.vocab_size, self.eos_token_ids)
        self.runner = build_runner(
            loaded.model,
            loaded.num_blocks,
            cache.block_size,
            sampler,
            config.model.decode_backend,
            spec,
            self.max_model_len,
        )
        self.groups: dict[str, _RequestGroup] = {}
        self._failures: dict[str, Exception] = {}  # see take_failures
        self.seq_to_group: dict[str, tuple[_RequestGroup, _Sequence]] = {}

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLMEngine:
        torch.manual_seed(config.seed)
        return cls(load_model(config.model, config.cache), config)

    # -- requests -----------------------------------------------------------------

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> None:
        """Queue a request; ValueError names the problem (the engine is unaffected)."""
        if request_id in self.groups:
            raise ValueError(f"request_id '{request_id}' is already in use")
        check_token_ids(params, self.runner.sampler.vocab_size)
        prompt_ids = self._prompt_ids(prompt)
        text = prompt if isinstance(prompt, str) else None
        group = _RequestGroup(request_id, text, prompt_ids, params)
        requests = []
        for index in range(params.n):
            seed = None if params.seed is None else params.seed + index
            seq_id = request_id if params.n == 1 else f"{request_id}-{index}"
            requests.append(Request(seq_id, prompt_ids, params, self.eos_token_ids, seed))
        self.scheduler.add_requests(requests)  # all n or none; raises ValueError/QueueFullError
        for index, request in enumerate(requests):
            group.sequences.append(self._new_sequence(index, request, prompt_ids, params))
        for seq in group.sequences:
            self.seq_to_group[seq.request.request_id] = (group, seq)
        self.groups[request_id] = group

    def abort_request(self, request_id: str) -> None:
        group = self.groups.get(request_id)
        if group is None:
            return
        ids = [s.request.request_id for s in group.sequences]
        self.scheduler.finish_requests(ids, FinishReason.ABORT)
        self._forget(group)

    def has_unfinished_requests(self) -> bool:
        return bool(self.groups)

    # -- one step -----------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one scheduled forward pass; return the outputs of every request touched.

        No fault ends the engine. A forward pass that raises fails the request that ran
        alone in it, or sends its requests back to run one at a time until the culprit
        is found (`Scheduler.fail_step`); a fault while turning one request's tokens into
        outputs fails that request. Failed requests are handed out by `take_failures()`.
        """
        sched_out = self.scheduler.schedule()
        try:
            sampled = self.runner.execute(sched_out)
        except Exception as exc:
            logger.exception("a step over %d sequences raised", len(sched_out.sequences))
            for seq_id in self.scheduler.fail_step(sched_out):
                self._fail(seq_id, exc)
            return []
        num_before = {rid: self.seq_to_group[rid][1].request.num_output_tokens for rid in sampled}
        self.scheduler.update_from_output(
            sched_out, {rid: [tok.token_id for tok in toks] for rid, toks in sampled.items()}
        )
        touched: dict[str, _RequestGroup] = {}
        for seq_id, tokens in sampled.items():
            group, seq = self.seq_to_group[seq_id]
            try:
                self._on_tokens(seq, tokens, num_before[seq_id])
            except Exception as exc:
                logger.exception("post-processing request %s raised", group.request_id)
                self._fail(seq_id, exc)
                touched.pop(group.request_id, None)
                continue
            touched[group.request_id] = group
        outputs = []
        for group in touched.values():
            try:
                outputs.append(self._make_output(group))
            except Exception as exc:
                logger.exception("building the output of request %s raised", group.request_id)
                self._fail(group.sequences[0].request.request_id, exc)
                continue
            if group.finished:
                self._forget(group)
        try:  # no candidates unless speculating (the scheduler holds no lookahead slots)
            drafts = self.runner.propose(self.scheduler.draft_candidates())
        except Exception:  # no drafts this step: the next step decodes plainly
            logger.exception("proposing draft tokens raised")
        else:
            self.scheduler.set_draft_token_ids(drafts)
        return outputs

    def stats(self) -> EngineStats:
        spec = self.runner.spec_decode_stats()
        return EngineStats(
            **asdict(self.scheduler.stats()),
            spec_decode_method=spec.method,
            spec_decode_proposer=spec.proposer,
            spec_decode_num_drafts=spec.num_drafts,
            spec_decode_num_draft_tokens=spec.num_draft_tokens,
            spec_decode_num_accepted_tokens=spec.num_accepted_tokens,
        )

    # -- internals ----------------------------------------------------------------

    def _prompt_ids(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt must not be empty")
            return self.tokenizer.encode(prompt)
        if not prompt:
            raise ValueError("prompt must not be empty")
        vocab = self.runner.sampler.vocab_size
        if any(not 0 <= t < vocab for t in prompt):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        return list(prompt)

    def _new_sequence(
        self, index: int, request: Request, prompt_ids: list[int], params: SamplingParams
    ) -> _Sequence:
        detok = IncrementalDetokenizer(
            self.tokenizer,
            prompt_ids,
            skip_special_tokens=params.skip_special_tokens,
            stop=params.stop,
            include_stop_str_in_output=params.include_stop_str_in_output,
        )
        return _Sequence(index, request, detok, [] if params.logprobs is not None else None)

    def _on_tokens(self, seq: _Sequence, tokens: list[SampledToken], num_before: int) -> None:
        """The tokens the scheduler appended this step (several with speculative decoding;
        it drops those after a stop token), up to any stop string, which the scheduler
        then finishes the request at."""
        request = seq.request
        num_appended = request.num_output_tokens - num_before
        for index, token in enumerate(tokens[:num_appended]):
            stop = seq.detokenizer.add_token(token.token_id)
            if seq.logprobs is not None and token.logprob is not None:
                seq.logprobs.append(self._token_logprob(token))
            if stop is not None:
                self.scheduler.finish_at_stop_string(request, num_before + index + 1, stop)
                return

    def _token_logprob(self, token: SampledToken) -> TokenLogprob:
        top = [(t, self._piece(t), lp) for t, lp in (token.top_logprobs or [])]
        assert token.logprob is not None
        return TokenLogprob(token.token_id, self._piece(token.token_id), token.logprob, top)

    def _piece(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _make_output(self, group: _RequestGroup) -> RequestOutput:
        completions = [self._completion(s) for s in group.sequences]
        return RequestOutput(
            request_id=group.request_id,
            prompt_token_ids=group.prompt_token_ids,
            outputs=completions,
            finished=group.finished,
            metrics=self._metrics(group),
            prompt=group.prompt,
            num_cached_tokens=max(s.request.num_cached_tokens for s in group.sequences),
        )

    def _completion(self, seq: _Sequence) -> CompletionOutput:
        request = seq.request
        finished = request.is_finished
        return CompletionOutput(
            index=seq.index,
            text=seq.detokenizer.visible_text(finished),
            token_ids=list(request.output_token_ids),
            logprobs=list(seq.logprobs) if seq.logprobs is not None else None,
            finish_reason=request.finish_reason if finished else None,
            stop_reason=request.stop_reason if finished else None,
        )

    def _metrics(self, group: _RequestGroup) -> RequestMetrics:
        timings = group.sequences[0].request.timings
        arrival = group.arrival_time
        metrics = RequestMetrics(arrival_time=arrival)
        if timings.first_scheduled is not None:
            metrics.queue_time = timings.first_scheduled - arrival
        if timings.first_token is not None:
            metrics.time_to_first_token = timings.first_token - arrival
            if timings.first_scheduled is not None:
                metrics.prefill_time = timings.first_token - timings.first_scheduled
        finished = [s.request.timings.finished for s in group.sequences]
        if all(f is not None for f in finished) and timings.first_token is not None:
            metrics.finished_time = max(f for f in finished if f is not None)
            metrics.decode_time = metrics.finished_time - timings.first_token
        return metrics

    def take_failures(self) -> dict[str, Exception]:
        """The requests failed since the last call, by request id, with what failed them.
        Their blocks are free and they are forgotten: nothing more comes for them."""
        failures, self._failures = self._failures, {}
        return failures

    def reset(self) -> list[str]:
        """Forget every request and start from an empty scheduler (all blocks free), for
        a loop that died mid-step; returns the ids of the requests dropped."""
        dropped = list(self.groups)
        for seq_id in self.seq_to_group:
            try:
                self.runner.release(seq_id)
            except Exception:  # the state being dropped may be what broke
                logger.exception("releasing %s during a reset raised", seq_id)
        self.groups.clear()
        self.seq_to_group.clear()
        self._failures.clear()
        self.scheduler = self.scheduler.fresh()
        return dropped

    def _fail(self, seq_id: str, error: Exception) -> None:
        """Finish the whole request that sequence seq_id belongs to, as failed by error."""
        entry = self.seq_to_group.get(seq_id)
        if entry is None:
            return
        group = entry[0]
        self.scheduler.finish_requests(
            [s.request.request_id for s in group.sequences], FinishReason.ABORT
        )
        self._failures[group.request_id] = error
        self._forget(group)

    def _forget(self, group: _RequestGroup) -> None:
        self.groups.pop(group.request_id, None)
        for seq in group.sequences:
            self.seq_to_group.pop(seq.request.request_id, None)
            self.runner.release(seq.request.request_id)
