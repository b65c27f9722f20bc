"""The serving core shared by every generating route: prompt -> engine stream -> outputs.

One `EngineStream` per prompt wraps `EngineClient.generate`. It turns engine exceptions
into `APIError`s, enforces the per-request deadline, observes the latency metrics, and
always aborts its engine request when it is closed before the end: closing happens in a
shielded `finally`, so a client that disconnects mid-stream frees its KV blocks at the
engine's next step.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import TypeVar

import anyio
from fastapi import Request

from warpserve.engine.protocol import EngineDeadError, EngineOverloadedError, RequestFailedError
from warpserve.outputs import RequestOutput
from warpserve.request import SamplingParams
from warpserve.server.errors import APIError, from_value_error, overloaded, unavailable
from warpserve.server.metrics import ServerMetrics
from warpserve.server.state import ServerState, Ticket

T = TypeVar("T")
CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away first"


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class LatencyTracker:
    """Observes TTFT, inter-token latency, queue time and end-to-end latency of one request."""

    def __init__(self, metrics: ServerMetrics, arrival: float) -> None:
        self._metrics = metrics
        self._arrival = arrival
        self._last_token_time: float | None = None
        self._num_steps = 0  # longest choice so far: one token per choice per step

    def observe(self, out: RequestOutput) -> None:
        now = time.perf_counter()
        num_steps = max((len(c.token_ids) for c in out.outputs), default=0)
        new_steps = num_steps - self._num_steps
        if new_steps > 0:
            if self._last_token_time is None:
                self._metrics.ttft.observe(now - self._arrival)
            else:
                self._metrics.itl.observe((now - self._last_token_time) / new_steps)
            self._last_token_time = now
            self._num_steps = num_steps
        if out.finished:
            self._on_finished(out, now)

    def _on_finished(self, out: RequestOutput, now: float) -> None:
        self._metrics.e2e.observe(now - self._arrival)
        if out.metrics.queue_time is not None:
            self._metrics.queue_time.observe(out.metrics.queue_time)
        self._metrics.prompt_tokens.inc(len(out.prompt_token_ids))
        self._metrics.generation_tokens.inc(sum(len(c.token_ids) for c in out.outputs))
        for choice in out.outputs:
            reason = choice.finish_reason.value if choice.finish_reason else "unknown"
            self._metrics.finished(reason)


class EngineStream:
    """One prompt's generation: `prime()` once, then `next()` until it returns None."""

    def __init__(
        self,
        state: ServerState,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        arrival: float,
    ) -> None:
        engine = state.require_engine(None)
        self.request_id = request_id
        self._engine = engine
        self._state = state
        self._outputs = engine.generate(prompt_token_ids, params, request_id)
        self._deadline = asyncio.get_running_loop().time() + state.config.request_timeout_s
        self._tracker = LatencyTracker(state.metrics, arrival)
        self._primed: RequestOutput | None = None
        self.is_finished = False

    async def prime(self) -> None:
        """Wait for the first output, so admission errors become HTTP statuses, not events."""
        self._primed = await self._fetch()

    async def next(self) -> RequestOutput | None:
        if self._primed is not None:
            out, self._primed = self._primed, None
            return out
        if self.is_finished:
            return None
        return await self._fetch()

    async def _fetch(self) -> RequestOutput:
        try:
            async with asyncio.timeout_at(self._deadline):
                out = await anext(self._outputs)
        except StopAsyncIteration:
            raise unavailable("the engine ended a request without finishing it") from None
        except EngineOverloadedError:
            self._state.metrics.rejected("engine_full")
            raise overloaded(self._state.config.retry_after_s) from None
        except EngineDeadError as exc:
            retry_after = self._state.config.retry_after_s
            raise unavailable(f"the engine is not running: {exc}", retry_after) from None
        except RequestFailedError as exc:
            self._state.metrics.rejected("engine_error")
            raise APIError(500, str(exc), code="engine_error") from None
        except ValueError as exc:
            raise from_value_error(exc, {"prompt_token_ids": "prompt"}) from None
        except TimeoutError:
            timeout = self._state.config.request_timeout_s
            raise APIError(504, f"the request ran past its {timeout:g} s timeout") from None
        self._tracker.observe(out)
        self.is_finished = out.finished
        return out

    async def close(self) -> None:
        """Abort the engine request unless it finished; safe to call more than once."""
        with anyio.CancelScope(shield=True):
            if isinstance(self._outputs, AsyncGenerator):
                await self._outputs.aclose()
            if not self.is_finished:
                self.is_finished = True
                await self._engine.abort(self.request_id)


class StreamGroup:
    """The streams of one HTTP request (one per prompt) and its admission ticket."""

    def __init__(self, streams: list[EngineStream], ticket: Ticket, write_stall_s: float) -> None:
        self.streams = streams
        self._ticket = ticket
        ticket.is_handed_over = True
        self.write_stall_s = write_stall_s  # a streamed response's limit per blocked write

    async def close(self) -> None:
        try:
            for stream in self.streams:
                await stream.close()
        finally:
            self._ticket.release()

    async def collect(self) -> list[RequestOutput]:
        """Every stream's last output (non-streaming responses); the first error cancels
        the others and is raised."""
        return await all_or_none([_last(s) for s in self.streams])

    async def merged(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """(prompt index, output) pairs as they arrive, across all streams."""
        if len(self.streams) == 1:  # the common case needs no tasks
            while (out := await self.streams[0].next()) is not None:
                yield 0, out
            return
        async for pair in _merge(self.streams):
            yield pair


async def open_streams(
    state: ServerState,
    request: Request,
    prompts: list[list[int]],
    params: SamplingParams,
    id_prefix: str,
    arrival: float,
    ticket: Ticket,
) -> StreamGroup:
    """Submit every prompt (admitted with `ticket`, which the group then owns) and wait
    for each first output; on any error close them all: a batch is all or nothing."""
    base_id = new_request_id(id_prefix)
    group = StreamGroup([], ticket, state.config.write_stall_timeout_s)
    try:
        for index, prompt_ids in enumerate(prompts):
            rid = base_id if len(prompts) == 1 else f"{base_id}-{index}"
            group.streams.append(EngineStream(state, rid, prompt_ids, params, arrival))
        await cancel_on_disconnect(request, _prime_all(group.streams))
    except BaseException:
        await group.close()
        raise
    return group


async def _prime_all(streams: list[EngineStream]) -> None:
    await all_or_none([s.prime() for s in streams])


async def all_or_none(work: list[Awaitable[T]]) -> list[T]:
    """Await all; the first to raise cancels the rest, and its exception is raised once
    they have all stopped (so nothing is left running on a stream being closed)."""
    if len(work) == 1:
        return [await work[0]]
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return [task.result() for task in tasks]


async def _last(stream: EngineStream) -> RequestOutput:
    last = None
    while (out := await stream.next()) is not None:
        last = out
    if last is None:
        raise unavailable("the engine returned no output")
    return last


async def _merge(streams: list[EngineStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    pending = {asyncio.ensure_future(s.next()): i for i, s in enumerate(streams)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: pending[t]):
                index = pending.pop(task)
                out = task.result()
                if out is not None:
                    pending[asyncio.ensure_future(streams[index].next())] = index
                    yield index, out
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


class ClientDisconnected(Exception):
    """The client closed its connection before the response was ready."""


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client disconnects first (non-streaming paths)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.wait({task, watcher})
    if task.cancelled():
        raise ClientDisconnected
    return task.result()


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
