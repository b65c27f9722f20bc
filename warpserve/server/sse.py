"""Server-sent events: the response that streams, closes its engine streams, and never 500s."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from fastapi.responses import StreamingResponse
from starlette.types import Message, Send

from warpserve.server.errors import APIError
from warpserve.server.generation import StreamGroup

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def event(payload: object, prefix: str = "data: ") -> str:
    return f"{prefix}{json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


class _WriteStalled(Exception):
    pass


class StallGuardedResponse(StreamingResponse):
    """A streamed response that gives up on a client that stops reading: when one write
    waits longer than write_stall_s (the socket's buffers are full), the body is closed
    (which aborts its engine requests) and the connection dropped. Without it, a reader
    that never reads would hold its engine slot until the request timeout."""

    def __init__(self, content: AsyncIterator[str], write_stall_s: float, **kwargs: object) -> None:
        super().__init__(content, **kwargs)  # type: ignore[arg-type]
        self._content = content
        self._write_stall_s = write_stall_s

    async def stream_response(self, send: Send) -> None:
        try:
            start = {"type": "http.response.start", "status": self.status_code}
            await self._send(send, {**start, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode()
                await self._send(
                    send, {"type": "http.response.body", "body": data, "more_body": True}
                )
            await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
        except _WriteStalled:
            logger.info("a client stopped reading for %g s: response dropped", self._write_stall_s)
        finally:
            if isinstance(self._content, AsyncGenerator):
                await self._content.aclose()

    async def _send(self, send: Send, message: Message) -> None:
        try:
            async with asyncio.timeout(self._write_stall_s):
                await send(message)
        except TimeoutError:
            raise _WriteStalled from None


def sse_response(
    group: StreamGroup,
    events: AsyncIterator[str],
    error_event: Callable[[APIError], str],
    done: str | None = DONE,
) -> StreamingResponse:
    """Stream `events`; an error after the headers went out becomes one last error event."""

    async def body() -> AsyncIterator[str]:
        try:
            async for chunk in events:
                yield chunk
        except APIError as err:
            yield error_event(err)
        finally:
            await group.close()
        if done is not None:
            yield done

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StallGuardedResponse(
        body(), group.write_stall_s, media_type="text/event-stream", headers=headers
    )
