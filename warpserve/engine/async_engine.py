"""AsyncLLM: the engine loop in its own thread, fed through a command queue.

The HTTP event loop never runs a model step, and the engine thread never waits on HTTP:
requests go in as commands (add / abort), outputs come back to each request's
`OutputSlot` with call_soon_threadsafe. The engine thread is the only one that touches the
LLMEngine (and so the scheduler and KV cache state). torch releases the GIL inside its
kernels, so on 2 cores the event loop keeps parsing and streaming while a step runs.

Nothing a client does can stop the loop:
- There is no cross-thread future to race on: admission is an item in the request's slot,
  and a request cancelled before admission is skipped by the engine thread (the abort
  that follows it in the queue is then a no-op).
- A command or a step that raises fails its own request(s) (`LLMEngine.step` isolates a
  faulty forward pass); the loop goes on.
- If the loop thread dies anyway, a supervisor thread answers every in-flight request
  with EngineDeadError (503), resets the engine (all KV blocks free) and starts a new
  loop thread: `num_restarts` counts it.
- A slow reader holds one output, never a queue: the slot keeps only the newest
  (outputs are cumulative, so the newest carries everything).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from warpserve.config import EngineConfig
from warpserve.engine.llm_engine import LLMEngine
from warpserve.engine.protocol import (
    EngineDeadError,
    EngineLiveness,
    EngineOverloadedError,
    EngineStats,
    RequestFailedError,
)
from warpserve.engine.threads import ThreadPolicy, ThreadSetter
from warpserve.outputs import RequestOutput
from warpserve.request import SamplingParams
from warpserve.scheduler.scheduler import QueueFullError

logger = logging.getLogger(__name__)

# /health skips its probe when a step finished this recently: the loop is plainly working.
HEALTHY_IF_STEPPED_WITHIN_S = 5.0
_ADMITTED = object()  # the first item of a slot once the engine has queued the request


class OutputSlot:
    """One request's way back from the engine thread, on the request's event loop.

    Holds at most one item: the newest output (a later one replaces one not yet read,
    which is safe because outputs are cumulative), an exception (final: nothing replaces
    it), or the admission marker.
    """

    def __init__(self) -> None:
        self._item: object = None
        self._ready = asyncio.Event()

    def put(self, item: object) -> None:
        if isinstance(self._item, BaseException):
            return
        self._item = item
        self._ready.set()

    async def get(self) -> object:
        await self._ready.wait()
        item, self._item = self._item, None
        self._ready.clear()
        return item


@dataclass
class _Add:
    request_id: str
    prompt: str | list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    slot: OutputSlot = field(default_factory=OutputSlot)
    cancelled: bool = False  # set by the caller's side; the engine thread skips it then


@dataclass
class _Abort:
    request_id: str


class AsyncLLM:
    def __init__(self, engine: LLMEngine, threads: ThreadSetter | None = None) -> None:
        self.engine = engine
        self._threads = threads  # None: torch's thread count stays as the caller left it
        self.tokenizer = engine.tokenizer
        self.model_name = engine.model_name
        self.max_model_len = engine.max_model_len
        self.vocab_size = engine.vocab_size
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, _Add] = {}  # the loop thread only (or the supervisor)
        self._stats = engine.stats()
        self._dead: BaseException | None = None  # set while restarting, or for good
        self._stopping = threading.Event()
        self._probe_ids = itertools.count()
        self.num_restarts = 0
        self.last_step_at = time.monotonic()
        self._step_started_at: float | None = None
        self._thread = self._start_loop()
        self._supervisor = threading.Thread(
            target=self._supervise, name="warpserve-engine-supervisor", daemon=True
        )
        self._supervisor.start()

    @classmethod
    def from_config(cls, config: EngineConfig) -> AsyncLLM:
        engine = LLMEngine.from_config(config)
        num_cores = os.cpu_count() or 1
        return cls(engine, ThreadSetter(ThreadPolicy.from_config(config.model, num_cores)))

    # -- EngineClient ---------------------------------------------------------------

    async def generate(
        self, prompt: str | list[int], params: SamplingParams, request_id: str
    ) -> AsyncIterator[RequestOutput]:
        self._raise_if_dead()
        add = _Add(request_id, prompt, params, asyncio.get_running_loop())
        self._commands.put(add)
        finished = False
        try:
            while not finished:
                item = await add.slot.get()
                if isinstance(item, BaseException):
                    raise item
                if item is _ADMITTED:
                    continue
                assert isinstance(item, RequestOutput)
                finished = item.finished
                yield item
        finally:
            if not finished:  # the caller went away, timed out or failed: free the blocks
                add.cancelled = True
                self._commands.put(_Abort(request_id))

    async def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    async def check_health(self, timeout_s: float) -> None:
        """Healthy when the loop is alive and either stepped in the last few seconds or
        runs a one-token probe within timeout_s; a step running past timeout_s is not."""
        self._raise_if_dead()
        started = self._step_started_at
        if started is not None and time.monotonic() - started > timeout_s:
            running = time.monotonic() - started
            raise EngineDeadError(f"a step has been running for {running:.1f} s")
        if time.monotonic() - self.last_step_at < HEALTHY_IF_STEPPED_WITHIN_S:
            return
        params = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
        request_id = f"health-{next(self._probe_ids)}"
        try:
            async with asyncio.timeout(timeout_s):
                async for _ in self.generate([self._probe_token()], params, request_id):
                    pass
        except TimeoutError as exc:
            raise EngineDeadError(f"health probe took longer than {timeout_s} s") from exc
        except EngineOverloadedError:
            return  # busy is not dead: the loop is admitting and refusing requests

    def stats(self) -> EngineStats:
        return self._stats

    def liveness(self) -> EngineLiveness:
        return EngineLiveness(is_alive=self.is_alive, num_restarts=self.num_restarts)

    @property
    def is_alive(self) -> bool:
        return self._dead is None and self._thread.is_alive()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the loop after it has finished what is in flight (or after timeout_s)."""
        self._stopping.set()
        self._commands.put(None)
        self._thread.join(timeout_s)
        self._supervisor.join(timeout_s)

    # -- the loop thread ------------------------------------------------------------

    def _start_loop(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="warpserve-engine", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        try:
            while True:
                self._drain_commands(block=not self.engine.has_unfinished_requests())
                if self._stopping.is_set() and not self.engine.has_unfinished_requests():
                    return
                if self.engine.has_unfinished_requests():
                    self._step()
        except BaseException as exc:  # the supervisor restarts the loop
            logger.exception("engine loop died")
            self._dead = exc

    def _step(self) -> None:
        if self._threads is not None:  # the last step's counts: the next step is alike
            self._threads.before_step(self._stats.num_running + self._stats.num_waiting)
        self._step_started_at = time.monotonic()
        try:
            outputs = self.engine.step()
        finally:
            self._step_started_at = None
        self.last_step_at = time.monotonic()
        self._stats = self.engine.stats()
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            if not _deliver(stream, out):  # its event loop is gone: nobody will read it
                self.engine.abort_request(out.request_id)
            if out.finished or not stream.loop.is_running():
                self._streams.pop(out.request_id, None)
        for request_id, error in self.engine.take_failures().items():
            stream = self._streams.pop(request_id, None)
            if stream is not None:
                _deliver(stream, RequestFailedError(f"the engine failed this request: {error}"))

    def _drain_commands(self, block: bool) -> None:
        pending = []
        if block:  # idle: sleep until a command arrives (or wake to check for shutdown)
            try:
                pending.append(self._commands.get(timeout=0.5))
            except queue.Empty:
                return
        while not self._commands.empty():
            pending.append(self._commands.get_nowait())
        for command in pending:
            if command is not None:  # None only wakes the loop
                self._handle(command)
        self._stats = self.engine.stats()

    def _handle(self, command: _Add | _Abort) -> None:
        if isinstance(command, _Abort):
            self.engine.abort_request(command.request_id)
            self._streams.pop(command.request_id, None)
            return
        if command.cancelled:  # its caller left before we got here: no work for it
            return
        try:
            self.engine.add_request(command.request_id, command.prompt, command.params)
        except QueueFullError as exc:
            _deliver(command, EngineOverloadedError(str(exc)))
        except ValueError as exc:
            _deliver(command, exc)
        except Exception as exc:  # a fault of ours, for this request only
            logger.exception("admitting request %s raised", command.request_id)
            self.engine.abort_request(command.request_id)
            _deliver(command, RequestFailedError(f"the engine could not admit it: {exc}"))
        else:
            self._streams[command.request_id] = command
            _deliver(command, _ADMITTED)

    # -- the supervisor thread ------------------------------------------------------

    def _supervise(self) -> None:
        """Wait for the loop thread to end; unless shutting down, restart it."""
        while True:
            self._thread.join()
            if self._dead is not None:
                self._fail_all(EngineDeadError(f"the engine loop died: {self._dead}"))
            if self._stopping.is_set():
                return
            try:
                dropped = self.engine.reset()
            except BaseException:
                logger.exception("resetting the engine failed: it stays down")
                return
            logger.warning("engine loop restarted; %d requests failed", len(dropped))
            self._stats = self.engine.stats()
            self.num_restarts += 1
            if self._threads is not None:  # torch's thread count is per thread
                self._threads.current = None
            self._thread = self._start_loop()
            self._dead = None

    def _fail_all(self, error: BaseException) -> None:
        for stream in self._streams.values():
            _deliver(stream, error)
        self._streams.clear()
        while not self._commands.empty():
            command = self._commands.get_nowait()
            if isinstance(command, _Add):
                _deliver(command, error)

    def _raise_if_dead(self) -> None:
        if not self.is_alive:
            raise EngineDeadError(f"engine loop is not running: {self._dead}")

    def _probe_token(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else min(self.tokenizer.eos_token_ids, default=0)


def _deliver(stream: _Add, item: object) -> bool:
    try:
        stream.loop.call_soon_threadsafe(stream.slot.put, item)
    except RuntimeError:  # the event loop is closed
        return False
    return True
