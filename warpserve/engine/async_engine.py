"""AsyncLLM: the engine loop in its own thread, fed through a command queue.

The HTTP event loop never runs a model step, and the engine thread never waits on HTTP:
requests go in as commands (add / abort), outputs come back to each request's asyncio
queue with call_soon_threadsafe. The engine thread is the only one that touches the
LLMEngine (and so the scheduler and KV cache state). torch releases the GIL inside its
kernels, so on 2 cores the event loop keeps parsing and streaming while a step runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
from warpserve.engine.protocol import EngineDeadError, EngineOverloadedError, EngineStats
from warpserve.engine.threads import ThreadPolicy, ThreadSetter
from warpserve.outputs import RequestOutput
from warpserve.request import SamplingParams
from warpserve.scheduler.scheduler import QueueFullError

logger = logging.getLogger(__name__)


@dataclass
class _Add:
    request_id: str
    prompt: str | list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue
    admitted: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


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
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, _Add] = {}  # engine thread only
        self._stats = engine.stats()
        self._dead: BaseException | None = None
        self._stopping = threading.Event()
        self._probe_ids = itertools.count()
        self.last_step_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="warpserve-engine", daemon=True)
        self._thread.start()

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
        add = _Add(request_id, prompt, params, asyncio.get_running_loop(), asyncio.Queue())
        self._commands.put(add)
        finished = False
        try:
            await asyncio.wrap_future(add.admitted)  # ValueError / EngineOverloadedError
            while not finished:
                item = await add.outputs.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            if not finished:  # the caller went away or timed out: free the KV blocks
                self._commands.put(_Abort(request_id))

    async def abort(self, request_id: str) -> None:
        self._commands.put(_Abort(request_id))

    async def check_health(self, timeout_s: float) -> None:
        self._raise_if_dead()
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

    @property
    def is_alive(self) -> bool:
        return self._dead is None and self._thread.is_alive()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the loop after it has finished what is in flight (or after timeout_s)."""
        self._stopping.set()
        self._commands.put(None)
        self._thread.join(timeout_s)

    # -- engine thread --------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._drain_commands(block=not self.engine.has_unfinished_requests())
                if self._stopping.is_set() and not self.engine.has_unfinished_requests():
                    return
                if self.engine.has_unfinished_requests():
                    self._step()
        except BaseException as exc:  # the loop must report its death, whatever it was
            logger.exception("engine loop died")
            self._dead = exc
            self._fail_all(EngineDeadError(f"engine loop died: {exc}"))

    def _step(self) -> None:
        if self._threads is not None:  # the last step's counts: the next step is alike
            self._threads.before_step(self._stats.num_running + self._stats.num_waiting)
        outputs = self.engine.step()
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
        try:
            self.engine.add_request(command.request_id, command.prompt, command.params)
        except QueueFullError as exc:
            command.admitted.set_exception(EngineOverloadedError(str(exc)))
        except ValueError as exc:
            command.admitted.set_exception(exc)
        else:
            self._streams[command.request_id] = command
            command.admitted.set_result(None)

    def _fail_all(self, error: BaseException) -> None:
        for stream in self._streams.values():
            _deliver(stream, error)
        self._streams.clear()
        while not self._commands.empty():
            command = self._commands.get_nowait()
            if isinstance(command, _Add):
                command.admitted.set_exception(error)

    def _raise_if_dead(self) -> None:
        if not self.is_alive:
            raise EngineDeadError(f"engine loop is not running: {self._dead}")

    def _probe_token(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else min(self.tokenizer.eos_token_ids, default=0)


def _deliver(stream: _Add, item: RequestOutput | BaseException) -> bool:
    try:
        stream.loop.call_soon_threadsafe(stream.outputs.put_nowait, item)
    except RuntimeError:  # the event loop is closed
        return False
    return True
